"""Low-rank adapters (LoRA, through `peft`) on the LLM's attention: the `lm4lv-lora` control.

With LoRA the LLM is **no longer frozen**: its attention projections become W + (alpha / r) B A, with A, B trained
alongside the adapters and task tokens. The control answers what the frozen constraint costs; the paper's model
(`lm4lv`) has no LoRA.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import InputError

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # the attention projections of Llama-style LLMs


def attach_lora(llm: nn.Module, rank: int, alpha: float, targets=LORA_TARGETS, seed: int = 0) -> nn.ModuleDict:
    """Inject LoRA of `rank` into `llm`'s `targets` (in place; B starts at zero, so the LLM's function is unchanged)
    and return the injected pairs as {module path with '/' for '.': {"A": Linear, "B": Linear}} in fp32.

    The pairs are the LLM's own modules, so training them through this dict trains the LLM's LoRA."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(targets), lora_dropout=0.0)
    with torch.random.fork_rng(devices=[]):  # A's random init: a function of the seed, not of the global RNG
        torch.manual_seed(seed)
        inject_adapter_in_model(config, llm)
    pairs = nn.ModuleDict()
    for name, module in llm.named_modules():
        if isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and "default" in module.lora_A:
            pairs[name.replace(".", "/")] = nn.ModuleDict(
                {"A": module.lora_A["default"], "B": module.lora_B["default"]}
            )
    if not pairs:
        raise InputError(f"This LLM has no modules named {', '.join(targets)} for LoRA.")
    pairs.float()  # trained in fp32 (peft casts the input to the LoRA weights' dtype and the sum back)
    pairs.requires_grad_(True)
    return pairs


PEFT_CONFIG_FILE, PEFT_WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"


def save_peft_adapter(folder: str, pairs: nn.ModuleDict, rank: int, alpha: float, base_model: str) -> None:
    """Write the LoRA pairs in PEFT's own format (`adapter_config.json` + `adapter_model.safetensors`), so that
    `PeftModel.from_pretrained(llm, folder)` puts them on the LLM without LM4LV. `base_model` is recorded as PEFT's
    `base_model_name_or_path` (the LLM's name as the checkpoint records it)."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    targets = sorted({name.split("/")[-1] for name in pairs})
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        target_modules=targets,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )
    config.save_pretrained(folder)
    state = {}
    for name, pair in pairs.items():
        module = "base_model.model." + name.replace("/", ".")
        state[f"{module}.lora_A.weight"] = pair["A"].weight.detach().float().contiguous().cpu()  # (r, d_in)
        state[f"{module}.lora_B.weight"] = pair["B"].weight.detach().float().contiguous().cpu()  # (d_out, r)
    save_file(state, os.path.join(folder, PEFT_WEIGHTS_FILE), metadata={"format": "pt"})
