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


class ReadoutFit:
    """Accumulates the (features, targets) of `readout` groups over batches, per readout layer, then ridge-fits each
    layer on its own samples (one layer if the readout is shared, one per task otherwise)."""

    def __init__(self):
        self.groups: dict[int, tuple[nn.Linear, list, list]] = {}

    def add(self, groups) -> None:
        """groups: [(layer, x (M, in), y (M, out))] as returned by a model's `readout`."""
        for layer, x, y in groups:
            _, xs, ys = self.groups.setdefault(id(layer), (layer, [], []))
            xs.append(x)
            ys.append(y)

    @torch.no_grad()
    def fit(self, ridge: float) -> float:
        """Fit every layer; returns the mean squared error over all samples (in the space the layers write)."""
        if not self.groups:
            raise ValueError("No samples to fit the readout on.")
        total, count = 0.0, 0
        for layer, xs, ys in self.groups.values():
            x, y = torch.cat(xs), torch.cat(ys)  # (M, in), (M, out)
            fit_linear(layer, x, y, ridge)
            total += float(((layer(x.float()) - y.float()) ** 2).sum())
            count += y.numel()
        return total / count
