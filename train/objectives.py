"""Auxiliary training objectives beside the paper's CE + L2 (which `LM4LV.forward_loss` returns): the pixel loss
through the frozen decoder, and what the LLM is fed (teacher forcing, its own generation, a mix: self-conditioning).
The carry loss is `train.carry`."""

from __future__ import annotations

import torch

from lm4lv_core.generate import Finished


def pixel_loss(vision, pred: torch.Tensor, hq: torch.Tensor) -> torch.Tensor:
    """MSE between the frozen decoder's images (B, 3, S, S, normalised pixels) of predicted and target tokens."""
    with torch.no_grad():
        reference = vision.decode(hq)
    return torch.nn.functional.mse_loss(vision.decode(pred), reference)


@torch.no_grad()
def fed_tokens(model, lq: torch.Tensor, hq: torch.Tensor, names: list[str], inputs: str) -> torch.Tensor:
    """(B, N, vision_dim) HQ tokens to feed the LLM: generated (free), one-pass predictions (self) or hq (teacher)."""
    if inputs == "teacher":
        return hq
    if inputs == "self":
        return model.forward_loss(lq, hq, names)["pred"]
    finished = {e.row: e for e in model.events(lq, names, force_image_after=0) if isinstance(e, Finished)}
    return torch.stack([finished[i].image_or(lq[i]) for i in range(len(names))])


def generated_mix(model, lq: torch.Tensor, hq: torch.Tensor, names: list[str], fraction: float) -> torch.Tensor:
    """(B, N, vision_dim) HQ tokens to feed the LLM: a `fraction` of them, drawn per token, replaced by the model's own
    free-running generation (no grad)."""
    generated = fed_tokens(model, lq, hq, names, "free")  # (B, N, vision_dim)
    swap = torch.rand(hq.shape[:2], device=hq.device)[..., None] < fraction
    return torch.where(swap, generated.to(hq.dtype), hq)
