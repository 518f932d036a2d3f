"""Device and dtype selection: bf16 for the frozen LLM where the hardware runs it fast, fp32 elsewhere."""

from __future__ import annotations

import functools
import os

import torch


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has AMX-BF16 or AVX512-BF16 matrix instructions (read from /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    words = set(flags.split())
    return bool({"amx_bf16", "avx512_bf16"} & words)


LLM_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # the frozen LLM's dtypes, as `LM4LV_DTYPE` names them
DTYPE_ALIASES = {"float32": "fp32", "bfloat16": "bf16"}  # also accepted in `LM4LV_DTYPE`


def dtype_name(dtype: torch.dtype) -> str:
    """`torch.float32` -> "fp32" (the names `LM4LV_DTYPE` and the training records use; others as torch names them)."""
    names = {value: name for name, value in LLM_DTYPES.items()}
    return names.get(dtype, str(dtype).removeprefix("torch."))


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_llm_dtype(device: torch.device | str | None = None) -> torch.dtype:
    """bf16 on CUDA and on CPUs with bf16 matrix units; fp32 otherwise. `LM4LV_DTYPE=fp32|bf16` overrides."""
    forced = os.environ.get("LM4LV_DTYPE", "").lower()
    forced = DTYPE_ALIASES.get(forced, forced)
    if forced in LLM_DTYPES:
        return LLM_DTYPES[forced]
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.bfloat16
    return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
