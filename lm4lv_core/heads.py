"""The only trainable parts of LM4LV: two linear adapters and one task-token set per task (and, as an option
outside the paper's trainable set, one position embedding per visual-token index)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .tasks import TASKS


@dataclass(frozen=True)
class Interface:
    """How the adapters meet the frozen LLM beyond the paper's two shared linear adapters: the options a recipe
    chooses, built once (validated here) and passed down to `LM4LV.build` / `variants.build_model`. Each is a
    `HeadsConfig` field of the same name (documented there)."""

    whitening: float = 0.0
    position_embeddings: bool = False
    task_readouts: bool = False
    task_input_adapters: bool = False
    lq_gain: float | None = None  # the learned LQ gain's start (None: no gain)

    def __post_init__(self):
        if self.whitening < 0:
            raise ValueError(f"whitening is an eigenvalue floor >= 0, not {self.whitening}")
        if self.lq_gain is not None and self.lq_gain <= 0:
            raise ValueError(f"the LQ gain starts at a positive value, not {self.lq_gain}")

    @property
    def is_paper(self) -> bool:
        """Only the paper's interface (what the one-pass controls accept)."""
        return self == PAPER_INTERFACE

    def config_fields(self) -> dict:
        """These options as `HeadsConfig` fields."""
        return dict(
            whitening=self.whitening,
            position_embeddings=self.position_embeddings,
            task_readouts=self.task_readouts,
            task_input_adapters=self.task_input_adapters,
            lq_gain=self.lq_gain is not None,
            lq_gain_init=1.0 if self.lq_gain is None else float(self.lq_gain),
        )


PAPER_INTERFACE = Interface()  # two shared linear adapters on raw MAE features, as in the paper


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
    # PCA whitening of the MAE features, eigenvalues floored at this fraction of the largest (0: off):
    # adapter_in reads whitened features and adapter_out writes them (the L2 loss stays in the unwhitened space).
    # A fixed linear map composed with a linear adapter is still a linear adapter: this changes how the optimiser
    # sees the weak, detail-carrying feature directions, not the model class. Stored with the weights.
    whitening: float = 0.0
    # LoRA on the LLM's attention (the `lm4lv-lora` control; 0: none, the LLM frozen as in the paper). The pairs are
    # attached by LM4LV (they live in the LLM) and saved with these weights under `lora.`.
    lora_rank: int = 0
    lora_alpha: float = 0.0
    # a learned vector per visual-token index (CLS, then the patches in raster order), added to what adapter_in
    # writes for the LQ and the HQ image alike; zero-initialised, so a model that gains them starts unchanged. Our
    # MAE's features carry no absolute position, so the LLM's copy of an LQ token is addressed by content alone
    # and a generated token's errors misaddress it; this gives both images the same address. Not in the paper's
    # trainable set (num_visual_tokens x llm_dim more parameters): off by default, stored with the weights.
    position_embeddings: bool = False
    # one adapter_out per task instead of one shared by all (the paper trains one model per task, so each task has
    # its own linear readout there too: the same model class). Weights under `adapter_out.<task>.`; a checkpoint
    # without this field has one shared readout. `LM4LVHeads.split_readout` turns a shared readout into copies.
    task_readouts: bool = False
    # one adapter_in per task instead of one shared (the paper's one-model-per-task has that too: the same model
    # class), for the LQ image and the fed-back HQ tokens alike. Weights under `adapter_in.<task>.`; a checkpoint
    # without this field has one shared adapter_in. `LM4LVHeads.split_input_adapter` turns a shared one into copies.
    task_input_adapters: bool = False
    # a learned gain for the LQ image's embeddings (adapter_in's output and its position vectors), apart from the
    # answer's tokens: exp(lq_log_gain), starting at lq_gain_init (1: off). A scale per role composed with a linear
    # adapter is still a linear adapter per role. A loud LQ token survives the LLM's first layers better (its
    # sublayers' outputs are normalised before they join the residual stream); whether the copy still finds it is
    # what training decides. Stored with the weights as `lq_log_gain`.
    lq_gain: bool = False
    lq_gain_init: float = 1.0
    extra: dict = field(default_factory=dict)


class LM4LVHeads(nn.Module):
    """adapter_in: MAE dim -> LLM dim; adapter_out: LLM final hidden state -> MAE dim (each one shared, or one per
    task: `config.task_input_adapters`, `config.task_readouts`); task tokens (K x LLM dim) per task."""

    def __init__(self, config: HeadsConfig):
        super().__init__()
        self.config = config
        tasks_in = config.tasks if config.task_input_adapters else None
        self.adapter_in = _linear(config.vision_dim, config.llm_dim, tasks_in)
        self.adapter_out = _linear(config.llm_dim, config.vision_dim, config.tasks if config.task_readouts else None)
        self.task_tokens = nn.ParameterDict(
            {t: nn.Parameter(torch.zeros(config.num_task_tokens, config.llm_dim)) for t in config.tasks}
        )
        whiten = config.whitening > 0
        self.register_buffer("whiten_mean", torch.zeros(config.vision_dim), persistent=whiten)
        self.register_buffer("whiten_basis", torch.eye(config.vision_dim), persistent=whiten)  # B (D, D)
        self.register_buffer("whiten_inverse", torch.eye(config.vision_dim), persistent=whiten)  # B^-1 (D, D)
        if config.position_embeddings:
            if config.num_visual_tokens <= 0:
                raise ValueError("position_embeddings needs HeadsConfig.num_visual_tokens")
            self.visual_positions = nn.Parameter(torch.zeros(config.num_visual_tokens, config.llm_dim))  # (N, llm_dim)
        if config.lq_gain:
            if config.lq_gain_init <= 0:
                raise ValueError(f"lq_gain_init must be positive, not {config.lq_gain_init}")
            self.lq_log_gain = nn.Parameter(torch.tensor(float(config.lq_gain_init)).log())  # () scalar

    @torch.no_grad()
    def set_whitening(self, tokens: torch.Tensor) -> None:
        """PCA-whiten what the adapters read and write, from MAE features (..., vision_dim), keeping `to_llm` and
        `to_visual` unchanged: the adapters' weights are re-expressed in the new basis, so an initialised or trained
        pair computes the same functions and only the optimiser's view of the feature directions changes."""
        floor = self.config.whitening
        if floor <= 0:
            raise ValueError("set_whitening needs a HeadsConfig with whitening > 0")
        flat = tokens.reshape(-1, tokens.shape[-1]).double()  # (M, D)
        mean = flat.mean(0)
        eigenvalues, vectors = torch.linalg.eigh((flat - mean).T @ (flat - mean) / len(flat))  # ascending
        scale = eigenvalues.clamp_min(floor * eigenvalues.max()).sqrt()  # (D,)
        self.rebase_whitening(mean, vectors.T / scale[:, None], vectors * scale)  # B and B^-1, (D, D)

    @torch.no_grad()
    def rebase_whitening(self, mean: torch.Tensor, basis: torch.Tensor, inverse: torch.Tensor) -> None:
        """Make (mean, basis B, B^-1) the whitening, re-expressing every adapter so it computes the same function:
        adapter_in reads B (x - mean), adapter_out writes it (x: MAE features)."""
        mean, basis, inverse = mean.double(), basis.double(), inverse.double()
        old_mean, old_basis, old_inverse = (
            t.double() for t in (self.whiten_mean, self.whiten_basis, self.whiten_inverse)
        )
        for adapter in self.input_adapters():
            w_in = adapter.weight.double() @ old_basis
            adapter.bias.add_((w_in @ (mean - old_mean)).float())
            adapter.weight.copy_((w_in @ inverse).float())
        for readout in self.readouts():
            w_out = old_inverse @ readout.weight.double()
            b_out = old_inverse @ readout.bias.double() + old_mean  # both maps in the MAE feature space
            readout.weight.copy_((basis @ w_out).float())
            readout.bias.copy_((basis @ (b_out - mean)).float())
        self.whiten_mean.copy_(mean.float())
        self.whiten_basis.copy_(basis.float())
        self.whiten_inverse.copy_(inverse.float())

    def to_llm(
        self,
        tokens: torch.Tensor,
        index: torch.Tensor | None = None,
        tasks: list[str] | None = None,
        answer: bool = False,
    ) -> torch.Tensor:
        """(B, ..., vision_dim) MAE features -> (B, ..., llm_dim) LLM input embeddings.

        index: each token's position in its image (LongTensor of shape tokens.shape[:-1], or broadcastable to it),
        used by the position embeddings; default: the tokens are whole images, (..., N, vision_dim).
        tasks: the B rows' task names, needed with per-task input adapters.
        answer: the tokens are the answer's (HQ) image (the LQ gain does not apply to them)."""
        embeds = self._to_llm(tokens, index, tasks)  # (B, ..., llm_dim)
        return embeds if answer or not self.config.lq_gain else embeds * self.lq_log_gain.exp()

    def _to_llm(self, tokens: torch.Tensor, index: torch.Tensor | None, tasks: list[str] | None) -> torch.Tensor:
        embeds = _rowwise(self.adapter_in, self.written(tokens), tasks)
        if not self.config.position_embeddings:
            return embeds
        if index is None:
            if tokens.dim() < 2 or tokens.shape[-2] != self.config.num_visual_tokens:
                raise ValueError(
                    f"Give each token's index: {tuple(tokens.shape[:-1])} tokens are not whole images "
                    f"of {self.config.num_visual_tokens}"
                )
            index = torch.arange(tokens.shape[-2], device=tokens.device)
        return embeds + self.visual_positions[index]

    def input_adapters(self) -> list[nn.Linear]:
        """Every adapter_in layer: the shared one, or one per task."""
        return list(self.adapter_in.values()) if self.config.task_input_adapters else [self.adapter_in]

    def input_adapter(self, task: str) -> nn.Linear:
        """The adapter_in layer that writes `task`'s visual tokens."""
        return self.adapter_in[task] if self.config.task_input_adapters else self.adapter_in

    @torch.no_grad()
    def split_input_adapter(self) -> None:
        """Give every task its own copy of the shared adapter_in (the same functions; from here on trained per
        task). Nothing changes if the input adapters are already per task."""
        if not self.config.task_input_adapters:
            self.adapter_in = _copies(self.adapter_in, self.config.tasks)
            self.config.task_input_adapters = True

    def readouts(self) -> list[nn.Linear]:
        """Every adapter_out layer: the shared one, or one per task."""
        return list(self.adapter_out.values()) if self.config.task_readouts else [self.adapter_out]

    def readout(self, task: str) -> nn.Linear:
        """The adapter_out layer that reads `task`'s hidden states."""
        return self.adapter_out[task] if self.config.task_readouts else self.adapter_out

    @torch.no_grad()
    def split_readout(self) -> None:
        """Give every task its own copy of the shared adapter_out (the same functions; from here on trained or
        refitted per task). Nothing changes if the readouts are already per task."""
        if not self.config.task_readouts:
            self.adapter_out = _copies(self.adapter_out, self.config.tasks)
            self.config.task_readouts = True

    def to_visual(self, hidden: torch.Tensor, tasks: list[str] | None = None) -> torch.Tensor:
        """(B, ..., llm_dim) LLM final hidden states -> (B, ..., vision_dim) MAE features. tasks: the B rows' task
        names, needed with per-task readouts."""
        written = self.write(hidden.float(), tasks)
        return written @ self.whiten_inverse.T + self.whiten_mean

    def write(self, hidden: torch.Tensor, tasks: list[str] | None) -> torch.Tensor:
        """adapter_out of (B, ..., llm_dim) hidden states, each row by its task's readout: (B, ..., vision_dim)."""
        return _rowwise(self.adapter_out, hidden, tasks)

    def written(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., vision_dim) MAE features in the space the adapters read and write (whitened, where it is on)."""
        return (tokens.float() - self.whiten_mean) @ self.whiten_basis.T

    @torch.no_grad()
    def initialize(self, token_embeddings: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Start near the paper's trained solution (B.1: adapter_out @ adapter_in close to a scaled identity).

        adapter_in gets orthonormal columns scaled to the LLM's embedding norm, adapter_out its pseudo-inverse;
        task tokens are copies of random vocabulary embeddings. token_embeddings: (V, llm_dim).
        """
        d_v, d_l = self.config.vision_dim, self.config.llm_dim
        q, _ = torch.linalg.qr(torch.randn(d_l, d_v, generator=generator))  # (d_l, d_v), orthonormal columns
        scale = token_embeddings.float().norm(dim=-1).mean() / d_v**0.5
        for adapter in self.input_adapters():
            adapter.weight.copy_(q * scale)
            adapter.bias.zero_()
        for readout in self.readouts():
            readout.weight.copy_(q.T / scale)
            readout.bias.zero_()
        for tokens in self.task_tokens.values():
            rows = torch.randint(0, token_embeddings.shape[0], (tokens.shape[0],), generator=generator)
            tokens.copy_(token_embeddings[rows].float())

    def task_embeddings(self, tasks: list[str]) -> torch.Tensor:
        """Task names -> (B, K, llm_dim)."""
        return torch.stack([self.task_tokens[t] for t in tasks])


def _linear(d_in: int, d_out: int, tasks: tuple[str, ...] | None) -> nn.Module:
    """One nn.Linear, or (tasks given) one per task in a ModuleDict."""
    if tasks is None:
        return nn.Linear(d_in, d_out)
    return nn.ModuleDict({t: nn.Linear(d_in, d_out) for t in tasks})


def _copies(layer: nn.Linear, tasks: tuple[str, ...]) -> nn.ModuleDict:
    return nn.ModuleDict({t: copy.deepcopy(layer) for t in tasks})


def _rowwise(layers: nn.Module, x: torch.Tensor, tasks: list[str] | None) -> torch.Tensor:
    """A shared nn.Linear on (B, ..., d_in), or, for a per-task ModuleDict, each of the B rows through its task's
    layer: (B, ..., d_out)."""
    if isinstance(layers, nn.Linear):
        return layers(x)
    if tasks is None or len(tasks) != x.shape[0]:
        raise ValueError(
            f"Per-task adapters need one task name per row: {x.shape[0]} rows, "
            f"{'no' if tasks is None else len(tasks)} names"
        )
    weight = torch.stack([layers[t].weight for t in tasks])  # (B, d_out, d_in)
    bias = torch.stack([layers[t].bias for t in tasks])  # (B, d_out)
    rows = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, M, d_in)
    out = torch.baddbmm(bias[:, None], rows, weight.transpose(1, 2))  # (B, M, d_out)
    return out.reshape(*x.shape[:-1], out.shape[-1])
