"""The training interface every model variant implements beside the image API (`restore.Restorer`): what train/
needs of a model, and nothing the app or the CLI use (as LLaVA keeps its model apart from its processor)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class Trainable(ABC):
    """A variant's training side: `trainable` (the module holding everything training updates, saved as the
    checkpoint's weights), the teacher-forced loss and, where a linear layer maps frozen features to visual tokens,
    the data for its closed-form fit."""

    trainable: torch.nn.Module

    @property
    @abstractmethod
    def has_linear_readout(self) -> bool:
        """Whether `readout` applies: a linear layer maps frozen features to visual tokens."""

    @abstractmethod
    def forward_loss(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str], **options) -> dict:
        """The training loss {"loss", "l2", "pred", ...} of a batch of (LQ, HQ) tokens (B, N, vision_dim)."""

    @abstractmethod
    def readout(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str], **options):
        """[(readout nn.Linear, features (M, width), targets (M, vision_dim))], one entry per readout layer the batch
        uses, for a least-squares fit; only where `has_linear_readout`."""

    def trainable_parameters(self) -> int:
        """How many parameters training updates (the variant's `trainable` module)."""
        return sum(p.numel() for p in self.trainable.parameters())
