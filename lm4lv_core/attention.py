"""Which attention kernel the frozen LLM runs, and a faster one for CPU decoding.

Measured on a 2-core CPU with the embedded SmolLM2 (docs/RESULTS.md, "Speed"):
- decoding (one query per row against a preallocated KV cache), PyTorch's fused SDPA kernel spends about 1.8 ms per
  layer at a tile batch of 32, where two matrix products and a softmax over the grouped heads take about 0.5 ms:
  `lm4lv-cpu` (below) does that for single-query steps and hands everything else to SDPA;
- training (187 positions, forward and backward), the plain matrix products of HF's "eager" attention beat the fused
  kernel, whose backward costs 1.4x theirs.
On GPUs SDPA (or flash attention) stays the choice for both.

The kernel is registered with transformers' `AttentionInterface` under the name `lm4lv-cpu`, the library's own way to
add one, and selected per model with `model.set_attn_implementation(...)`.
"""

from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

CPU_DECODE = "lm4lv-cpu"


def cpu_decode_attention(
    module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """HF attention function: single-query steps as grouped matrix products, the rest through SDPA.

    query (B, H, 1, D), key/value (B, G, L, D) with H = G x R (grouped-query heads in HF's order: head h reads KV
    head h // R), attention_mask (B, 1, 1, L) bool (True: attend) or None. Returns ((B, 1, H, D), weights): the
    single-query steps' weights (B, H, 1, L) come back at no cost (a view; `lm4lv_core.explain` reads them), SDPA's
    are None."""
    batch, heads, length, dim = query.shape
    groups = key.shape[1]
    special = dropout > 0 or any(kwargs.get(k) is not None for k in ("softcap", "s_aux", "position_bias"))
    if length != 1 or special or heads % groups or (attention_mask is not None and attention_mask.dtype != torch.bool):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    scale = scaling if scaling is not None else dim**-0.5
    grouped = query.reshape(batch, groups, heads // groups, dim)  # (B, G, R, D)
    scores = torch.matmul(grouped, key.transpose(-1, -2)).float() * scale  # (B, G, R, L)
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))  # (B, 1, 1, L) broadcasts over G, R
    weights = scores.softmax(dim=-1).to(value.dtype)
    out = torch.matmul(weights, value)  # (B, G, R, D)
    return out.reshape(batch, 1, heads, dim), weights.reshape(batch, heads, 1, -1)


AttentionInterface.register(CPU_DECODE, cpu_decode_attention)
AttentionMaskInterface.register(CPU_DECODE, sdpa_mask)


def generation_attention(device: torch.device | str) -> str:
    """The kernel a loaded LLM runs for generation: `lm4lv-cpu` on the CPU, SDPA elsewhere."""
    return CPU_DECODE if torch.device(device).type == "cpu" else "sdpa"


def training_attention(device: torch.device | str, requested: str = "auto") -> str:
    """The kernel for training: `requested`, or for "auto" HF's "eager" on the CPU and SDPA elsewhere."""
    if requested != "auto":
        return requested
    return "eager" if torch.device(device).type == "cpu" else "sdpa"
