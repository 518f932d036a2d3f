"""The only trainable parts of LM4LV: two linear adapters and one task-token set per task."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

TASKS = ("denoise", "deblur", "derain", "depepper", "demask", "rotate", "flip")
SANITY_TASKS = ("repeat",)  # the paper's sanity check: the target is the input itself


@dataclass
class HeadsConfig:
    vision_dim: int
    llm_dim: int
    tasks: tuple[str, ...] = TASKS
    num_task_tokens: int = 10
    # where the weights came from, checked when a checkpoint is loaded (filled by LM4LV.save_pretrained)
    llm: str = ""
    llm_fingerprint: str = ""
    vision: str = ""
    vision_fingerprint: str = ""
    num_visual_tokens: int = 0
    extra: dict = field(default_factory=dict)


class LM4LVHeads(nn.Module):
    """adapter_in: MAE dim -> LLM dim; adapter_out: LLM final hidden state -> MAE dim; task tokens (K x LLM dim)."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.config = config
        self.adapter_in = nn.Linear(config.vision_dim, config.llm_dim)
        self.adapter_out = nn.Linear(config.llm_dim, config.vision_dim)
        self.task_tokens = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(config.num_task_tokens, config.llm_dim)) for t in config.tasks}
        )

    @torch.no_grad()
    def initialize(self, token_embeddings: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start near the paper's trained solution (B.1: adapter_out @ adapter_in close to a scaled identity).

        adapter_in gets orthonormal columns scaled to the LLM's embedding norm, adapter_out its pseudo-inverse;
        task tokens are copies of random vocabulary embeddings. token_embeddings: (V, llm_dim).
        """
        d_v, d_l = self.config.vision_dim, self.config.llm_dim
        q, _ = torch.linalg.qr(torch.randn(d_l, d_v, generator=generator))  # (d_l, d_v), orthonormal columns
        scale = token_embeddings.float().norm(dim=-1).mean() / d_v**0.5
        self.adapter_in.weight.copy_(q * scale)
        self.adapter_in.bias.zero_()
        self.adapter_out.weight.copy_(q.T / scale)
        self.adapter_out.bias.zero_()
        for tokens in self.task_tokens.values():
            rows = torch.randint(0, token_embeddings.shape[0], (tokens.shape[0],), generator=generator)
            tokens.copy_(token_embeddings[rows].float())

    def task_embeddings(self, tasks: list[str]) -> torch.Tensor:
        """Task names -> (B, K, llm_dim)."""
        return torch.stack([self.task_tokens[t] for t in tasks])
