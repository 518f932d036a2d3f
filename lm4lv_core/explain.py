"""Which LQ token each generated visual token copied: the frozen LLM's own attention, read during generation.

While an image is generated, a forward hook on every attention layer keeps the weights of the last single-query
step on the LQ image's positions ((heads, N) per layer: the `lm4lv-cpu` kernel returns them at no cost, where SDPA
returns none). Visual token j is written from the hidden state of the step just before it, so the weights kept when
token j is yielded are those that wrote it. No second pass.

Which heads copy is found from those weights themselves: a copying head puts its mass on one LQ token per output
token, and on a different one for each (`choose_heads`). The routing probe (`train.routing`) measures the same
heads teacher-forced, against the task's known sources.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch

from .attention import CPU_DECODE
from .sequence import LQ


@dataclass
class CopyMap:
    """Where each generated visual token's attention went, through the heads that copy.

    weights: (T, N) for each of T generated tokens (T <= N; the CLS token first, then the patches in raster order),
    the mean attention of `heads` at `layer` over the N LQ tokens (the rest of its mass went to text, task tokens
    and the answer so far)."""

    layer: int
    heads: list[int]
    weights: torch.Tensor  # (T, N)

    @property
    def sources(self) -> torch.Tensor:
        """(T,) the LQ token each output token read most."""
        return self.weights.argmax(-1)

    @property
    def mass(self) -> torch.Tensor:
        """(T,) the attention mass on that token (0..1)."""
        return self.weights.max(-1).values

    def rows(self) -> list[dict]:
        """One dict per output token: {"token", "source", "mass", "layer", "heads"} (token 0 and source 0: the CLS
        token)."""
        return [
            {"token": i, "source": int(s), "mass": round(float(m), 4), "layer": self.layer, "heads": self.heads}
            for i, (s, m) in enumerate(zip(self.sources, self.mass))
        ]

    def describe(self, expected, per_token: dict[str, list[float]] | None = None) -> dict:
        """The JSON of the view: {"layers", "heads", "agreement", "tokens": rows}; each row also gets "expected"
        (the LQ token the task copies, from `expected` (N,)) and, from `per_token` ({name: [value per patch]}, e.g.
        the per-token PSNR), its value (None for the CLS token)."""
        expected = torch.as_tensor(expected)
        rows = self.rows()
        for row in rows:
            row["expected"] = int(expected[row["token"]])
            for name, values in (per_token or {}).items():
                row[name] = None if row["token"] == 0 else values[row["token"] - 1]
        return {
            "layers": [self.layer],
            "heads": self.heads,
            "agreement": round(self.agreement(expected), 4),
            "tokens": rows,
        }

    def agreement(self, expected: torch.Tensor) -> float:
        """Fraction of output tokens whose top source is `expected` (T,) (e.g. `Task.token_sources`)."""
        return float((self.sources == expected[: len(self.sources)]).float().mean())


def choose_heads(attention: torch.Tensor, keep: float = 0.5) -> tuple[int, list[int]]:
    """The layer and heads that copy, from attention (T, layers, heads, N) of T generated tokens on N LQ tokens.

    A head's score: its mean peak mass on one LQ token, times the fraction of distinct tokens among its peaks (a
    head that always reads the same token, an attention sink, scores low). Returns the best head's layer and the
    heads of that layer scoring at least `keep` times the best."""
    peak_mass, peak = attention.float().max(-1)  # (T, layers, heads) each
    ordered = peak.sort(0).values  # (T, layers, heads): distinct peaks are the steps where the sorted value changes
    distinct = (1 + (ordered[1:] != ordered[:-1]).sum(0)).float() / peak.shape[0]  # (layers, heads)
    score = peak_mass.mean(0) * distinct  # (layers, heads)
    layer = int(score.max(-1).values.argmax())
    best = score[layer].max()
    heads = [h for h in range(score.shape[1]) if score[layer, h] >= keep * best]
    return layer, heads


def copy_map(attention: torch.Tensor, layer: int | None = None, heads: list[int] | None = None) -> CopyMap:
    """A CopyMap from attention (T, layers, heads, N); the copying layer and heads found by `choose_heads` unless
    given."""
    if layer is None or heads is None:
        layer, heads = choose_heads(attention)
    return CopyMap(layer, list(heads), attention[:, layer, heads].float().mean(1))  # (T, N)


class AttentionRecorder:
    """Keeps, per attention layer, the last single-query step's weights on the LQ positions (see the module doc).

    Use as a context manager around generation; `take()` returns what the last step read, (layers, B, heads, N).
    Inside it the LLM runs the `lm4lv-cpu` kernel (which returns its weights) and eagerly (hooks do not fire in a
    compiled graph); both are restored on exit."""

    def __init__(self, model):
        self.model = model
        self.readers = model.prompt_layout.positions(LQ)  # (N,) absolute positions of the LQ tokens
        self.latest: list[torch.Tensor | None] = []
        self._hooks = []

    def _keep(self, index: int, output) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is not None and weights.shape[-2] == 1:  # (B, H, 1, L): a decoding step
            self.latest[index] = weights[:, :, 0].float()

    def take(self) -> torch.Tensor | None:
        """(layers, B, heads, N) of the last decoding step since the previous `take`, else None.

        A layer whose cache is shorter than the others' (a sliding-window layer whose window the sequence outgrew:
        its keys are a rolling buffer, not positions) gets zeros: it is never chosen as the copying layer."""
        if any(w is None for w in self.latest):
            return None
        length = max(w.shape[-1] for w in self.latest)
        readers = self.readers.to(self.latest[0].device)
        shape = (*self.latest[0].shape[:-1], len(readers))  # (B, heads, N)
        taken = torch.stack(
            [w[..., readers] if w.shape[-1] == length else w.new_zeros(shape) for w in self.latest]
        ).cpu()
        self.latest = [None] * len(self.latest)
        return taken

    def __enter__(self) -> AttentionRecorder:
        layers = self.model.llm.base_model.layers
        self.latest = [None] * len(layers)
        self._kernel = self.model.llm.config._attn_implementation
        self._compiled = self.model._compiled
        if self._kernel != CPU_DECODE:
            self.model.llm.set_attn_implementation(CPU_DECODE)
        self.model._compiled = None
        self._hooks = [
            layer.self_attn.register_forward_hook(lambda m, i, out, k=k: self._keep(k, out))
            for k, layer in enumerate(layers)
        ]
        return self

    def __exit__(self, *exc) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        if self._kernel != CPU_DECODE:
            self.model.llm.set_attn_implementation(self._kernel)
        self.model._compiled = self._compiled


@contextmanager
def recording(model):
    """`AttentionRecorder(model)` where the model generates with an LLM, else None (the one-pass controls)."""
    if not getattr(model, "autoregressive", False) or not hasattr(model, "prompt_layout"):
        yield None
        return
    with AttentionRecorder(model) as recorder:
        yield recorder
