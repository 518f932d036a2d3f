"""The only trainable parts of LM4LV: two linear adapters and one task-token set per task (and, as an option
outside the paper's trainable set, one position embedding per visual-token index)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .tasks import TASKS


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
    # per-dimension standardisation of the MAE features: adapter_in reads (x - mean) / std, adapter_out writes
    # standardised features, and the L2 loss is taken in that space (the statistics are stored with the weights)
    standardize: bool = False
    # PCA whitening of the (standardised) MAE features, eigenvalues floored at this fraction of the largest (0: off):
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
    # the task tokens before the LQ image (`user: [task]<Img>[LQ]</Img>`) instead of after it (the paper's layout):
    # in a causal LLM the LQ tokens can then be processed for the task before the answer copies them. A layout
    # choice, not a parameter; off by default.
    task_tokens_first: bool = False
    # one position table per task for the answer's (HQ) tokens, the LQ image keeping the shared one (needs
    # position_embeddings). The shared table gives answer token j the address of LQ token j: right for the restoration
    # tasks, wrong for rotate and flip, whose token j comes from another LQ token. A per-task table, learned, lets a
    # spatial task address its own source tokens. Weights under `answer_positions.<task>`, each starting as a copy
    # of the shared table (`LM4LVHeads.split_answer_positions`); num_visual_tokens x llm_dim more per task.
    task_answer_positions: bool = False
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
        # identity unless config.standardize; saved with the weights only then, so older checkpoints still load
        self.register_buffer("feature_mean", torch.zeros(config.vision_dim), persistent=config.standardize)
        self.register_buffer("feature_std", torch.ones(config.vision_dim), persistent=config.standardize)
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
        if config.task_answer_positions:
            if not config.position_embeddings:
                raise ValueError("task_answer_positions needs position_embeddings")
            self.answer_positions = nn.ParameterDict(
                {t: nn.Parameter(torch.zeros(config.num_visual_tokens, config.llm_dim)) for t in config.tasks})

    @torch.no_grad()
    def set_feature_statistics(self, tokens: torch.Tensor, eps: float = 1e-3) -> None:
        """Per-dimension mean and std of MAE features (..., vision_dim), for a model with config.standardize."""
        if not self.config.standardize:
            raise ValueError("set_feature_statistics needs a HeadsConfig with standardize=True")
        flat = tokens.reshape(-1, tokens.shape[-1]).double()  # (M, vision_dim)
        self.feature_mean.copy_(flat.mean(0).float())
        self.feature_std.copy_(flat.std(0).clamp_min(eps).float())

    @torch.no_grad()
    def set_whitening(self, tokens: torch.Tensor) -> None:
        """PCA-whiten what the adapters read and write, from MAE features (..., vision_dim), keeping `to_llm` and
        `to_visual` unchanged: the adapters' weights are re-expressed in the new basis, so an initialised or trained
        pair computes the same functions and only the optimiser's view of the feature directions changes."""
        floor = self.config.whitening
        if floor <= 0:
            raise ValueError("set_whitening needs a HeadsConfig with whitening > 0")
        flat = self.standardized(tokens.reshape(-1, tokens.shape[-1])).double()  # (M, D)
        mean = flat.mean(0)
        eigenvalues, vectors = torch.linalg.eigh((flat - mean).T @ (flat - mean) / len(flat))  # ascending
        scale = eigenvalues.clamp_min(floor * eigenvalues.max()).sqrt()  # (D,)
        self.rebase_whitening(mean, vectors.T / scale[:, None], vectors * scale)  # B and B^-1, (D, D)

    @torch.no_grad()
    def rebase_whitening(self, mean: torch.Tensor, basis: torch.Tensor, inverse: torch.Tensor) -> None:
        """Make (mean, basis B, B^-1) the whitening, re-expressing every adapter so it computes the same function:
        adapter_in reads B (x - mean), adapter_out writes it (x: standardised features)."""
        mean, basis, inverse = mean.double(), basis.double(), inverse.double()
        old_mean, old_basis, old_inverse = (t.double() for t in (self.whiten_mean, self.whiten_basis,
                                                                  self.whiten_inverse))
        for adapter in self.input_adapters():
            w_in = adapter.weight.double() @ old_basis
            adapter.bias.add_((w_in @ (mean - old_mean)).float())
            adapter.weight.copy_((w_in @ inverse).float())
        for readout in self.readouts():
            w_out = old_inverse @ readout.weight.double()
            b_out = old_inverse @ readout.bias.double() + old_mean  # both maps in the standardised space
            readout.weight.copy_((basis @ w_out).float())
            readout.bias.copy_((basis @ (b_out - mean)).float())
        self.whiten_mean.copy_(mean.float())
        self.whiten_basis.copy_(basis.float())
        self.whiten_inverse.copy_(inverse.float())

    def to_llm(self, tokens: torch.Tensor, index: torch.Tensor | None = None,
               tasks: list[str] | None = None, answer: bool = False) -> torch.Tensor:
        """(B, ..., vision_dim) MAE features -> (B, ..., llm_dim) LLM input embeddings.

        index: each token's position in its image (LongTensor of shape tokens.shape[:-1], or broadcastable to it),
        used by the position embeddings; default: the tokens are whole images, (..., N, vision_dim).
        tasks: the B rows' task names, needed with per-task input adapters or answer positions.
        answer: the tokens are the answer's (HQ) image, which may have a position table per task."""
        embeds = self._to_llm(tokens, index, tasks, answer)  # (B, ..., llm_dim)
        return embeds if answer or not self.config.lq_gain else embeds * self.lq_log_gain.exp()

    def _to_llm(self, tokens: torch.Tensor, index: torch.Tensor | None, tasks: list[str] | None,
                answer: bool) -> torch.Tensor:
        embeds = _rowwise(self.adapter_in, self.written(tokens), tasks)
        if not self.config.position_embeddings:
            return embeds
        if index is None:
            if tokens.dim() < 2 or tokens.shape[-2] != self.config.num_visual_tokens:
                raise ValueError(f"Give each token's index: {tuple(tokens.shape[:-1])} tokens are not whole images "
                                 f"of {self.config.num_visual_tokens}")
            index = torch.arange(tokens.shape[-2], device=tokens.device)
        if not (answer and self.config.task_answer_positions):
            return embeds + self.visual_positions[index]
        if tasks is None or len(tasks) != tokens.shape[0]:
            raise ValueError(f"Per-task answer positions need one task name per row: {tokens.shape[0]} rows, "
                             f"{'no' if tasks is None else len(tasks)} names")
        tables = torch.stack([self.answer_positions[t] for t in tasks])  # (B, N, llm_dim)
        index = index.expand(tokens.shape[:-1])  # (B, ...)
        rows = torch.arange(len(tasks), device=index.device).view(-1, *[1] * (index.dim() - 1)).expand_as(index)
        return embeds + tables[rows, index]

    def answer_table(self, task: str) -> torch.Tensor:
        """(N, llm_dim) the position vectors `task`'s answer tokens get: its own table, or the shared one."""
        return self.answer_positions[task] if self.config.task_answer_positions else self.visual_positions

    @torch.no_grad()
    def split_answer_positions(self) -> None:
        """Give every task its own copy of the shared position table for its answer's tokens (the same functions;
        from here on trained per task). Nothing changes if the tables are already per task."""
        if not self.config.position_embeddings:
            raise ValueError("Answer positions per task need a model with position embeddings")
        if not self.config.task_answer_positions:
            self.answer_positions = nn.ParameterDict(
                {t: nn.Parameter(self.visual_positions.detach().clone()) for t in self.config.tasks})
            self.config.task_answer_positions = True

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
        standardized = written @ self.whiten_inverse.T + self.whiten_mean
        return standardized * self.feature_std + self.feature_mean

    def write(self, hidden: torch.Tensor, tasks: list[str] | None) -> torch.Tensor:
        """adapter_out of (B, ..., llm_dim) hidden states, each row by its task's readout: (B, ..., vision_dim)."""
        return _rowwise(self.adapter_out, hidden, tasks)

    def written(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., vision_dim) MAE features in the space the adapters read and write (standardised, whitened)."""
        return (self.standardized(tokens) - self.whiten_mean) @ self.whiten_basis.T

    def standardized(self, tokens: torch.Tensor) -> torch.Tensor:
        """(..., vision_dim) MAE features in the space adapter_out writes (and the L2 loss is taken in)."""
        return (tokens.float() - self.feature_mean) / self.feature_std

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
        raise ValueError(f"Per-task adapters need one task name per row: {x.shape[0]} rows, "
                         f"{'no' if tasks is None else len(tasks)} names")
    weight = torch.stack([layers[t].weight for t in tasks])  # (B, d_out, d_in)
    bias = torch.stack([layers[t].bias for t in tasks])  # (B, d_out)
    rows = x.reshape(x.shape[0], -1, x.shape[-1])  # (B, M, d_in)
    out = torch.baddbmm(bias[:, None], rows, weight.transpose(1, 2))  # (B, M, d_out)
    return out.reshape(*x.shape[:-1], out.shape[-1])
