"""Ridge regression used to initialise linear readouts (LM4LV's adapter_out, the MAE decoder's prediction layer)."""
from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fit_linear(layer: nn.Linear, x: torch.Tensor, y: torch.Tensor, ridge: float) -> None:
    """Set `layer` (in -> out) to the ridge least-squares fit y ~ layer(x); x (M, in), y (M, out).

    Computed in float64 on centred data, so the bias is not regularised; `ridge` is relative to the sample count."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + ridge * len(x) * torch.eye(x.shape[1], dtype=x.dtype)
    weight = torch.linalg.solve(gram, xc.T @ yc).T  # (out, in)
    layer.weight.copy_(weight.to(layer.weight.dtype))
    layer.bias.copy_((y_mean - weight @ x_mean).to(layer.bias.dtype))
