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


def with_noise(tokens: torch.Tensor, std: float) -> torch.Tensor:
    """(B, N, vision_dim) fed tokens with Gaussian noise of `std` (against exposure bias; 0: unchanged)."""
    return tokens + std * torch.randn_like(tokens) if std > 0 else tokens


def self_conditioning(hq: torch.Tensor, fraction: float, noise: float = 0.0):
    """The `feed` of `LM4LV.forward_loss`: a `fraction` of the fed tokens, drawn per token, replaced by the model's
    own teacher-forced predictions (computed by the model in the pass it shares with the loss), then `noise`."""

    def feed(own: torch.Tensor) -> torch.Tensor:  # (B, N, vision_dim) -> (B, N, vision_dim)
        swap = torch.rand(hq.shape[:2], device=hq.device)[..., None] < fraction
        return with_noise(torch.where(swap, own, hq), noise)

    return feed


def fed_options(model, lq, hq, names: list[str], fraction: float, inputs: str, noise: float) -> dict:
    """What `forward_loss` is fed in training: self-conditioning on predicted (`feed`) or generated tokens (`fed`),
    input noise, or nothing (teacher forcing)."""
    if fraction > 0 and inputs == "generated":
        return {"fed": with_noise(generated_mix(model, lq, hq, names, fraction), noise)}
    if fraction > 0:
        return {"feed": self_conditioning(hq, fraction, noise)}
    return {"fed": with_noise(hq, noise)} if noise > 0 else {}


def generated_mix(model, lq: torch.Tensor, hq: torch.Tensor, names: list[str], fraction: float) -> torch.Tensor:
    """(B, N, vision_dim) HQ tokens to feed the LLM: a `fraction` of them, drawn per token, replaced by the model's own
    free-running generation (no grad)."""
    generated = fed_tokens(model, lq, hq, names, "free")  # (B, N, vision_dim)
    swap = torch.rand(hq.shape[:2], device=hq.device)[..., None] < fraction
    return torch.where(swap, generated.to(hq.dtype), hq)
