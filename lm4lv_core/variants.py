"""The model and its controls behind one name (`--variant` of training and evaluation), and checkpoint loading.

| variant | what maps LQ tokens to HQ tokens | trainable |
|---|---|---|
| `lm4lv` | the frozen LLM, autoregressively (the paper's model) | adapters + task tokens |
| `lm4lv-lora` | the same LLM with LoRA on its attention: **not frozen** (a control of the frozen constraint) | adapters + task tokens + LoRA pairs |
| `random-llm` | the same LLM architecture with random weights, frozen, autoregressively (paper 5.2) | adapters + task tokens |
| `vit-llm` | the frozen LLM in one pass, non-causal, no rotary embedding (paper 4.4) | adapters + task tokens |
| `single-layer` | one frozen LLM layer in one pass, non-causal (paper B.3) | adapters + task tokens |
| `linear` | one linear layer per task, per token, no LLM (paper 5.1) | the linear layers |
| `mlp` | a 2-layer MLP per token, no LLM (paper 5.3) | about LM4LV's count |
| `transformer` | a 1-layer Transformer, no LLM (paper 5.3); with `expert_width`/`expert_depth`, the feature-space ceiling | about LM4LV's count (or as sized) |
"""

from __future__ import annotations

from .checkpoint import checkpoint_folder, is_one_pass, read_raw_config, vision_name
from .errors import InputError
from .heads import PAPER_INTERFACE, Interface
from .model import LM4LV
from .one_pass import EXPERT_VARIANTS, LLM_VARIANTS, ONE_PASS_VARIANTS, OnePassModel, lm4lv_trainable_count

AUTOREGRESSIVE_VARIANTS = ("lm4lv", "lm4lv-lora", "random-llm")
VARIANTS = AUTOREGRESSIVE_VARIANTS + ONE_PASS_VARIANTS


def build_model(
    variant: str = "lm4lv",
    *,
    llm: str | None = None,
    vision=None,
    tasks=("denoise",),
    num_task_tokens: int = 10,
    layer: int | None = None,
    device=None,
    dtype=None,
    seed: int = 0,
    lora_rank: int | None = None,
    lora_alpha: float | None = None,
    expert_width: int | None = None,
    expert_depth: int = 1,
    interface: Interface = PAPER_INTERFACE,
):
    """A new, untrained model of a variant (for training). `interface`: the adapters' options beyond the paper's
    (`heads.Interface`; autoregressive variants only); `layer`: the LLM layer of `single-layer`; `lora_rank` (default
    8), `lora_alpha` (default 2 x rank): the LoRA of `lm4lv-lora`, refused for other variants; `expert_width`,
    `expert_depth`: a Transformer expert of that size instead of LM4LV's parameter count (the feature-space ceiling),
    `transformer` only."""
    if variant not in VARIANTS:
        raise InputError(f"Unknown variant {variant!r}; choose from {', '.join(VARIANTS)}.")
    if variant != "lm4lv-lora" and (lora_rank or lora_alpha):
        raise InputError(f"LoRA settings apply to the lm4lv-lora variant, not {variant!r}.")
    if variant != "transformer" and (expert_width or expert_depth != 1):
        raise InputError(f"An explicit expert width or depth applies to the transformer variant, not {variant!r}.")
    if variant in AUTOREGRESSIVE_VARIANTS:
        return LM4LV.build(
            llm=llm,
            vision=vision,
            tasks=tasks,
            num_task_tokens=num_task_tokens,
            device=device,
            dtype=dtype,
            seed=seed,
            random_llm_seed=seed if variant == "random-llm" else None,
            lora_rank=(lora_rank or 8) if variant == "lm4lv-lora" else 0,
            lora_alpha=lora_alpha,
            interface=interface,
        )
    if not interface.is_paper:
        raise InputError(
            f"Whitened features, position embeddings, per-task adapters and the LQ gain apply to the autoregressive "
            f"variants, not {variant!r}."
        )
    # the LLM is loaded for every one-pass variant: the LLM variants run it, the experts match its trainable count
    reference = LM4LV.build(
        llm=llm, vision=vision, tasks=tasks, num_task_tokens=num_task_tokens, device=device, dtype=dtype, seed=seed
    )
    return _one_pass(variant, reference, vision, tasks, num_task_tokens, layer, seed, expert_width, expert_depth)


def _one_pass(variant, reference, vision, tasks, num_task_tokens, layer, seed, width, depth) -> OnePassModel:
    """A one-pass control beside `reference` (an LM4LV of the same LLM, vision module and tasks)."""
    target = lm4lv_trainable_count(reference.vision.dim, reference.llm.config.hidden_size, len(tasks), num_task_tokens)
    return OnePassModel.build(
        variant,
        reference.vision,
        tasks,
        num_task_tokens,
        llm=reference.llm if variant in LLM_VARIANTS else None,
        llm_name=reference.heads.config.llm,
        vision_name=vision_name(vision),
        layer=layer,
        target_params=target if variant in EXPERT_VARIANTS else None,
        seed=seed,
        width=width,
        depth=depth,
    )


def load_model(path=None, llm: str | None = None, vision=None, device=None, dtype=None):
    """Load any trained checkpoint (LM4LV, random-llm or a one-pass control); default: the shipped embedded one."""
    folder = checkpoint_folder(path)
    if folder is not None:
        raw = read_raw_config(folder)
        if is_one_pass(raw):
            return OnePassModel.from_pretrained(folder, raw, llm=llm, vision=vision, device=device, dtype=dtype)
    return LM4LV.from_pretrained(path, llm=llm, vision=vision, device=device, dtype=dtype)


__all__ = ["VARIANTS", "AUTOREGRESSIVE_VARIANTS", "build_model", "load_model"]
