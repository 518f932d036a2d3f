"""The carry loss: an auxiliary training objective that asks the frozen LLM to keep each image token readable at its
own position up to the layer that copies it.

The routing probe (`train.routing`, `lq_stream`) finds the wall there: a clean token read linearly from its own
position loses 5 dB between the input embedding and the copying layer (SmolLM2-135M: layer 18), because the LLM's
first MLPs rewrite every token. Task training moves that figure slowly (1.5 dB over 1,600 steps), since it reaches
`adapter_in` only through the copy. This objective reaches it directly: a linear probe reads the residual stream
entering `layer` through that layer's own input norm (what its value projection reads) and predicts the LQ token's
decoded pixels; its MSE, weighted, is added to the task loss and trains `adapter_in` and the task tokens (and the
probe). With `kv_head` the probe reads instead the value vectors of one KV head of that layer (the one the copying
heads share: KV head 2 for SmolLM2-135M's heads 18.6 and 18.7), the 64 numbers the copy actually moves. With
`target="reference"` the probe predicts instead the reference's pixels at the same index (for tasks whose target is
aligned with the input: the restorations and repeat; rotate / flip keep the token's own): the copy is then asked to
carry what the restored token needs rather than the degradation too. The probe is a training aid: it is not part of
the model and is not exported. Several sites (layers, each with its KV head) give one probe each, their losses
averaged: the copy happens in more than one layer (SmolLM2-135M: heads 17.3 / 17.4 on KV head 1, 20.6 on KV head 2).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from lm4lv_core.llm import head_dim
from lm4lv_core.tasks import get_task
from train.least_squares import fit_linear


class CarryObjective(nn.Module):
    """LM4LV's training forward plus `weight` x the carry loss (returned as "carry"): the mean of one probe's loss per
    site, a site being a layer (`layers`) and, where `kv_heads` names one (one entry per layer, or None), a KV head."""

    def __init__(
        self, model: nn.Module, layers: list[int], weight: float, kv_heads: list | None = None, target: str = "input"
    ):
        super().__init__()
        if target not in ("input", "reference"):
            raise SystemExit(f"--carry-target {target}: choose 'input' or 'reference'.")
        kv_heads = [None] * len(layers) if kv_heads is None else list(kv_heads)
        if len(kv_heads) != len(layers):
            raise SystemExit(
                f"--carry-kv-head: give one KV head per --carry-layer ({len(layers)}), not {len(kv_heads)}."
            )
        self.model, self.weight, self.target = model, weight, target
        self.layers, self.kv_heads = list(layers), kv_heads
        self.probes = nn.ModuleList([self.make_probe(layer, head) for layer, head in zip(self.layers, kv_heads)])

    def make_probe(self, layer: int, kv_head: int | None) -> nn.Linear:
        """The linear probe of one site, checked: (what it reads) -> (p*p*3) pixels."""
        layers = len(self.model.llm.base_model.layers)
        if not 0 < layer < layers:
            raise SystemExit(f"--carry-layer {layer}: choose a layer of the LLM between 1 and {layers - 1}.")
        width = self.model.llm.config.hidden_size
        if kv_head is not None:
            width = head_dim(self.model.llm.config)
            kv_count = self.attention(layer).v_proj.out_features // width
            if not 0 <= kv_head < kv_count:
                raise SystemExit(f"--carry-kv-head {kv_head}: the LLM has {kv_count} KV heads (0 to {kv_count - 1}).")
        return nn.Linear(width, self.model.vision.patch_size**2 * 3).to(self.model.device)

    def attention(self, layer: int) -> nn.Module:
        attention = self.model.llm.base_model.layers[layer].self_attn
        if not hasattr(attention, "v_proj"):
            raise SystemExit(
                "--carry-kv-head needs an LLM whose attention has a v_proj (Llama-style); drop it to read "
                "the residual stream instead."
            )
        return attention

    def features(self, site: int, stream: torch.Tensor) -> torch.Tensor:
        """(B, N, llm_dim) residual stream entering site `site`'s layer at the LQ positions -> what its probe reads for
        the patch tokens (no CLS), fp32: the stream through the layer's own input norm (B, N-1, llm_dim), or with a KV
        head that head's value vectors (B, N-1, head_dim): exactly what the heads sharing it copy."""
        layer, kv_head = self.layers[site], self.kv_heads[site]
        normed = self.model.llm.base_model.layers[layer].input_layernorm(stream[:, 1:].to(self.model.llm_dtype))
        if kv_head is None:
            return normed.float()
        width = head_dim(self.model.llm.config)
        values = self.attention(layer).v_proj(normed)  # (B, N-1, kv_heads * head_dim)
        return values[..., kv_head * width : (kv_head + 1) * width].float()

    @torch.no_grad()
    def targets(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        """(B, N, vision_dim) LQ and HQ tokens -> (B, N-1, p*p*3) the probe's targets, decoded normalised pixels: what
        each LQ token holds, or with target "reference" the HQ token at the same index where the task aligns them."""
        vision = self.model.vision
        tokens = lq
        if self.target == "reference":
            aligned = torch.tensor([not get_task(t).spatial for t in tasks], device=lq.device)
            tokens = torch.where(aligned[:, None, None], hq, lq)
        return vision.mae.patchify(vision.decode(tokens))

    @torch.no_grad()
    def initialise(self, batches, ridge: float = 1e-2) -> list[float]:
        """Ridge fit of each probe on teacher-forced streams of `batches` [(lq, hq, tasks)]; returns their pixel MSEs."""
        xs, ys = [[] for _ in self.layers], []
        for lq, hq, tasks in batches:
            streams = self.model(lq, hq, tasks, carry_layers=self.layers)["carry"]
            for site, stream in enumerate(streams):
                xs[site].append(self.features(site, stream).flatten(0, 1))
            ys.append(self.targets(lq, hq, tasks).flatten(0, 1))
        y, fits = torch.cat(ys), []  # (M, p*p*3)
        for probe, x in zip(self.probes, xs):
            x = torch.cat(x)  # (M, width)
            fit_linear(probe, x, y, ridge)
            fits.append(float(F.mse_loss(probe(x), y)))
        return fits

    def forward(self, lq, hq, tasks, **options) -> dict[str, torch.Tensor]:
        terms = self.model(lq, hq, tasks, carry_layers=self.layers, **options)
        target = self.targets(lq, hq, tasks)
        losses = [
            F.mse_loss(probe(self.features(site, stream)), target)
            for site, (probe, stream) in enumerate(zip(self.probes, terms.pop("carry")))
        ]
        terms["carry"] = torch.stack(losses).mean()
        terms["loss"] = terms["loss"] + self.weight * terms["carry"]
        return terms
