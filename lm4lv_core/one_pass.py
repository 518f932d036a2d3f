"""The paper's controls that map LQ visual tokens to HQ visual tokens in ONE forward pass (no autoregression).

Each is a `--variant` of training and evaluation (see `lm4lv_core.variants`); the frozen-LLM variants keep LM4LV's
trainable parts (two linear adapters + one task-token set per task):
- `vit-llm` (paper 4.4): every layer of the frozen LLM, full (non-causal) attention, no rotary position embedding;
  the sequence is [task tokens][LQ tokens] and the hidden states at the LQ positions become the HQ tokens.
- `single-layer` (paper B.3): the same with one frozen LLM layer (chosen by `layer`).
- `linear` (paper 5.1): no LLM; one linear layer per task maps each LQ token to its HQ token (starts as a copy).
- `mlp` / `transformer` (paper 5.3): no LLM; a trainable 2-layer MLP (per token) or a 1-layer Transformer (whole
  sequence, learned positions, task tokens) with about as many trainable parameters as LM4LV's adapters + task
  tokens. Both are residual (output = input + f(input)) with a zero-initialised last layer, so they start as a copy.
  With an explicit `width` and `depth` (`--expert-width`, `--expert-depth`) the Transformer is the feature-space
  ceiling: the best non-LLM model in the same MAE space, of whatever size (docs/RESULTS.md).

`OnePassModel` offers the interface the rest of the library uses (`forward_loss`, `events`, and through
`model.Restorer` `stream` / `restore` / `restore_batch`; `save_pretrained` / `from_pretrained`), so the CLI, the demo and `train.evaluate` run the controls unchanged.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from .checkpoint import check_llm, load_checked_vision, load_trained_weights, write_checkpoint
from .device import default_device, default_llm_dtype
from .errors import CheckpointError, InputError
from .generate import Finished, ImageDone, VisualToken
from .heads import HeadsConfig, LM4LVHeads
from .llm import head_dim, load_llm, requested_llm, seen_embeddings
from .restore import Restorer
from .trainable import Trainable
from .vision import VisionModule, weights_fingerprint

LLM_VARIANTS = ("vit-llm", "single-layer")
EXPERT_VARIANTS = ("linear", "mlp", "transformer")
ONE_PASS_VARIANTS = LLM_VARIANTS + EXPERT_VARIANTS


@dataclass
class OnePassConfig:
    """What a one-pass control is and what it was trained with (saved as `lm4lv_config.json`)."""

    variant: str
    vision_dim: int
    num_visual_tokens: int
    tasks: tuple[str, ...]
    num_task_tokens: int = 10
    width: int = 0  # LLM hidden size (frozen-LLM variants) or the expert's hidden width
    depth: int = 1  # Transformer expert: number of blocks
    layer: int | None = None  # single-layer: index of the frozen LLM layer
    llm: str = ""
    llm_fingerprint: str = ""
    vision: str = ""
    vision_fingerprint: str = ""


def lm4lv_trainable_count(vision_dim: int, llm_dim: int, num_tasks: int, num_task_tokens: int) -> int:
    """Trainable parameters of LM4LV: adapter_in + adapter_out (with biases) + task tokens."""
    return 2 * vision_dim * llm_dim + llm_dim + vision_dim + num_tasks * num_task_tokens * llm_dim


# ---------------------------------------------------------------------------------------------------- backbones
class FrozenLLMStack(nn.Module):
    """Some layers of a frozen HF Llama-style LLM run without causal mask and without rotary embedding."""

    def __init__(self, llm, layers: list[int]):
        super().__init__()
        base = llm.base_model
        count = len(base.layers)
        if not layers or any(not 0 <= i < count for i in layers):
            raise InputError(f"LLM layer indices {layers} out of range: the LLM has {count} layers (0..{count - 1}).")
        self.layers = nn.ModuleList(base.layers[i] for i in layers)
        self.norm = base.norm
        self.head_dim = head_dim(llm.config)
        self.requires_grad_(False)

    @property
    def dtype(self) -> torch.dtype:
        return self.norm.weight.dtype

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, T, llm_dim) -> (B, T, llm_dim) fp32 hidden states after the final norm."""
        batch, length, _ = embeds.shape
        h = embeds.to(self.dtype)
        mask = torch.zeros(batch, 1, length, length, dtype=self.dtype, device=h.device)  # explicit: not causal
        cos = torch.ones(1, length, self.head_dim, dtype=self.dtype, device=h.device)  # rotation by 0: no RoPE
        sin = torch.zeros_like(cos)
        for layer in self.layers:
            out = layer(h, attention_mask=mask, position_embeddings=(cos, sin))
            h = out[0] if isinstance(out, tuple) else out
        return self.norm(h).float()


class LinearExpert(nn.Module):
    """One linear layer per task, applied to every token: (B, N, D) -> (B, N, D); starts as the identity."""

    def __init__(self, dim: int, tasks: tuple[str, ...]):
        super().__init__()
        self.maps = nn.ModuleDict({t: nn.Linear(dim, dim) for t in tasks})
        with torch.no_grad():
            for m in self.maps.values():
                m.weight.copy_(torch.eye(dim))
                m.bias.zero_()

    def forward(self, lq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        return torch.stack([self.maps[t](x) for x, t in zip(lq, tasks)])


class MLPExpert(nn.Module):
    """Per-token residual 2-layer MLP with a per-task bias on the hidden layer: x + W2 gelu(W1 x + b_task)."""

    def __init__(self, dim: int, width: int, tasks: tuple[str, ...]):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, width), nn.Linear(width, dim)
        self.task_bias = nn.ParameterDict({t: nn.Parameter(torch.zeros(width)) for t in tasks})
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    @staticmethod
    def count(dim: int, width: int, num_tasks: int) -> int:
        return 2 * dim * width + width + dim + num_tasks * width

    def forward(self, lq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        bias = torch.stack([self.task_bias[t] for t in tasks])[:, None]  # (B, 1, width)
        return lq + self.fc2(F.gelu(self.fc1(lq) + bias))


class TransformerExpert(nn.Module):
    """A pre-norm Transformer (`depth` blocks) over [task tokens][LQ tokens] with learned positions; residual output."""

    head_width = 32

    def __init__(
        self, dim: int, width: int, tasks: tuple[str, ...], num_task_tokens: int, num_tokens: int, depth: int = 1
    ):
        super().__init__()
        self.proj_in, self.proj_out = nn.Linear(dim, width), nn.Linear(width, dim)
        self.positions = nn.Parameter(0.02 * torch.randn(num_tokens, width))
        self.task_tokens = nn.ParameterDict(
            {t: nn.Parameter(0.02 * torch.randn(num_task_tokens, width)) for t in tasks}
        )
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                width,
                self.num_heads(width),
                4 * width,
                dropout=0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)
        self.register_load_state_dict_pre_hook(self._rename_single_block)

    @staticmethod
    def _rename_single_block(module, state_dict, prefix, *_):
        """Checkpoints of the 1-block expert (before `depth` existed) named their block `block.`."""
        for key in [k for k in state_dict if k.startswith(prefix + "block.")]:
            state_dict[prefix + "blocks.0." + key[len(prefix + "block.") :]] = state_dict.pop(key)

    @classmethod
    def num_heads(cls, width: int) -> int:
        return max(1, width // cls.head_width)

    @staticmethod
    def count(dim: int, width: int, num_tasks: int, num_task_tokens: int, num_tokens: int, depth: int = 1) -> int:
        block = 4 * width * width + 4 * width + 8 * width * width + 5 * width + 4 * width  # attention, MLP, 2 norms
        return (
            depth * block
            + 2 * width
            + 2 * dim * width
            + width
            + dim
            + (num_tokens + num_tasks * num_task_tokens) * width
        )

    def forward(self, lq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        tokens = self.proj_in(lq) + self.positions  # (B, N, width)
        task = torch.stack([self.task_tokens[t] for t in tasks])  # (B, K, width)
        h = torch.cat([task, tokens], dim=1)  # (B, K+N, width)
        for block in self.blocks:
            h = block(h)
        return lq + self.proj_out(self.norm(h)[:, task.shape[1] :])  # (B, N, dim)


def expert_width(variant: str, target: int, dim: int, num_tasks: int, num_task_tokens: int, num_tokens: int) -> int:
    """The hidden width whose trainable-parameter count is closest to `target` (for the Transformer: widths
    that its heads of about 32 channels divide)."""
    if variant == "mlp":
        candidates = range(8, 8192)
        count = lambda w: MLPExpert.count(dim, w, num_tasks)  # noqa: E731
    elif variant == "transformer":
        candidates = [w for w in range(1, 4096) if w % TransformerExpert.num_heads(w) == 0]
        count = lambda w: TransformerExpert.count(dim, w, num_tasks, num_task_tokens, num_tokens)  # noqa: E731
    else:
        return 0
    return min(candidates, key=lambda w: abs(count(w) - target))


# ---------------------------------------------------------------------------------------------------- the model
class OnePassModel(Restorer, Trainable, nn.Module):
    """A one-pass control with LM4LV's interface. `llm` is required for the frozen-LLM variants only."""

    autoregressive = False

    def __init__(self, config: OnePassConfig, vision: VisionModule, llm=None, trained: bool = True):
        super().__init__()
        if config.variant not in ONE_PASS_VARIANTS:
            raise InputError(f"Unknown one-pass variant {config.variant!r}; choose from {ONE_PASS_VARIANTS}.")
        self.config, self.vision, self.trained = config, vision, trained
        self.vision.requires_grad_(False)
        self.llm = llm
        if config.variant in LLM_VARIANTS:
            if llm is None:
                raise InputError(f"The {config.variant} variant needs the frozen LLM.")
            llm.requires_grad_(False)
            layers = list(range(len(llm.base_model.layers))) if config.variant == "vit-llm" else [config.layer]
            self.backbone = FrozenLLMStack(llm, layers)
            self.heads = LM4LVHeads(
                HeadsConfig(
                    vision_dim=config.vision_dim,
                    llm_dim=config.width,
                    tasks=config.tasks,
                    num_task_tokens=config.num_task_tokens,
                )
            )
            self.trainable = self.heads
        else:
            self.backbone = None
            if config.variant == "linear":
                self.trainable = LinearExpert(config.vision_dim, config.tasks)
            elif config.variant == "mlp":
                self.trainable = MLPExpert(config.vision_dim, config.width, config.tasks)
            else:
                self.trainable = TransformerExpert(
                    config.vision_dim,
                    config.width,
                    config.tasks,
                    config.num_task_tokens,
                    config.num_visual_tokens,
                    config.depth,
                )

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def llm_name(self) -> str:
        return self.config.llm

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.config.tasks)

    @property
    def device(self) -> torch.device:
        return next(self.trainable.parameters()).device

    def check_task(self, task: str) -> str:
        if task not in self.config.tasks:
            raise InputError(f"Unknown task {task!r}; choose one of: {', '.join(self.tasks)}.")
        return task

    # ------------------------------------------------------------------------------------------------ tensors
    def backbone_hidden(self, lq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        """Frozen-LLM variants: (B, N, vision_dim) -> (B, N, llm_dim) hidden states at the LQ positions."""
        heads = self.heads
        embeds = torch.cat([heads.task_embeddings(tasks), heads.adapter_in(lq.float())], dim=1)  # (B, K+N, llm_dim)
        return self.backbone(embeds)[:, heads.config.num_task_tokens :]

    def predict(self, lq: torch.Tensor, tasks: list[str]) -> torch.Tensor:
        """(B, N, vision_dim) LQ tokens -> (B, N, vision_dim) predicted HQ tokens."""
        if len(tasks) != lq.shape[0]:
            raise ValueError(f"{len(tasks)} task names for {lq.shape[0]} images")
        if lq.shape[1] != self.num_visual_tokens:
            raise ValueError(f"Feature count mismatch: {lq.shape[1]} tokens, the model takes {self.num_visual_tokens}")
        for task in tasks:
            self.check_task(task)
        lq = lq.to(self.device).float()
        if self.backbone is not None:
            return self.heads.adapter_out(self.backbone_hidden(lq, tasks))
        return self.trainable(lq, tasks)

    @property
    def has_linear_readout(self) -> bool:
        """The frozen-LLM variants read their hidden states with a linear adapter_out; the experts do not."""
        return self.backbone is not None

    def readout(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str]):
        """[(the linear readout layer, features (M, width), targets (M, vision_dim))] for a least-squares init (one
        entry: the controls have one shared readout)."""
        if not self.has_linear_readout:
            raise InputError(f"The {self.variant} variant has no linear readout on frozen features.")
        hidden = self.backbone_hidden(lq.to(self.device).float(), tasks)
        return [(self.heads.adapter_out, hidden.reshape(-1, hidden.shape[-1]), hq.reshape(-1, hq.shape[-1]))]

    def forward_loss(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str]) -> dict[str, torch.Tensor]:
        """L2 of the predicted HQ tokens in MAE space (no text, nothing fed back; `ce` is reported as 0)."""
        pred = self.predict(lq, tasks)
        l2 = F.mse_loss(pred, hq.to(pred.device).float())
        return {"loss": l2, "ce": torch.zeros((), device=l2.device), "l2": l2, "pred": pred}

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return self.forward_loss(*args, **kwargs)

    @torch.inference_mode()
    def events(self, lq: torch.Tensor, tasks: list[str], **generation_options):
        """The same events as LM4LV's generator (every token at once); generation options do not apply."""
        pred = self.predict(lq, tasks)  # (B, N, vision_dim)
        count = pred.shape[1]
        for row in range(pred.shape[0]):
            for index in range(count):
                yield VisualToken(row, index, count, pred[row, index])
            yield ImageDone(row, pred[row])
            yield Finished(row, "", pred[row])

    # ------------------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def build(
        cls,
        variant: str,
        vision: VisionModule,
        tasks,
        num_task_tokens: int = 10,
        llm=None,
        llm_name: str = "",
        vision_name: str = "",
        layer: int | None = None,
        target_params: int | None = None,
        seed: int = 0,
        width: int | None = None,
        depth: int = 1,
    ) -> OnePassModel:
        """A new control. `target_params`: trainable parameters the experts should match (LM4LV's count);
        `layer`: the single-layer variant's LLM layer (default: the middle one); `width`, `depth`: an explicit
        Transformer expert instead (the feature-space ceiling), whatever its parameter count."""
        tasks = tuple(tasks)
        if (width or depth != 1) and variant != "transformer":
            raise InputError(f"An explicit expert width or depth applies to the transformer variant, not {variant!r}.")
        if variant in LLM_VARIANTS:
            width = llm.config.hidden_size
        elif variant in ("mlp", "transformer") and not width:
            if not target_params:
                raise InputError(f"The {variant} expert needs target_params (LM4LV's trainable-parameter count).")
            width = expert_width(variant, target_params, vision.dim, len(tasks), num_task_tokens, vision.num_tokens)
        if variant == "single-layer" and layer is None:
            layer = llm.config.num_hidden_layers // 2  # the middle layer
        config = OnePassConfig(
            variant=variant,
            vision_dim=vision.dim,
            num_visual_tokens=vision.num_tokens,
            tasks=tasks,
            num_task_tokens=num_task_tokens,
            width=width or 0,
            depth=depth,
            layer=layer if variant == "single-layer" else None,
            llm=llm_name if variant in LLM_VARIANTS else "",
            llm_fingerprint=weights_fingerprint(llm) if variant in LLM_VARIANTS else "",
            vision=vision_name,
            vision_fingerprint=vision.fingerprint(),
        )
        torch.manual_seed(seed)
        model = cls(config, vision, llm if variant in LLM_VARIANTS else None, trained=False)
        if variant in LLM_VARIANTS:
            model.heads.initialize(seen_embeddings(llm), torch.Generator().manual_seed(seed))
        device = llm.device if llm is not None else vision.mean.device
        return model.to(device)

    def save_pretrained(self, path: str | os.PathLike, vision_path: str | None = None) -> None:
        config = self.config if vision_path is None else replace(self.config, vision=vision_path)
        write_checkpoint(path, self.trainable, asdict(config))

    @classmethod
    def from_pretrained(
        cls, folder: str, raw_config: dict, llm: str | None = None, vision: str | None = None, device=None, dtype=None
    ) -> OnePassModel:
        """Load a saved control (called by `lm4lv_core.variants.load_model`, which reads the config)."""
        try:
            raw = dict(raw_config, tasks=tuple(raw_config["tasks"]))
            config = OnePassConfig(**raw)
        except (TypeError, KeyError) as exc:
            raise CheckpointError(f"The config of checkpoint {folder} is unreadable: {exc}") from exc
        device = torch.device(device) if device is not None else default_device()
        vision_module = load_checked_vision(vision, config.vision, config.vision_fingerprint, folder)
        llm_model = None
        if config.variant in LLM_VARIANTS:
            llm = requested_llm(llm)
            llm_model, _ = load_llm(llm or config.llm, dtype=dtype or default_llm_dtype(device), device=device)
            check_llm(llm_model, config.llm_fingerprint, folder, config.llm, llm)
        model = cls(config, vision_module.to(device).eval(), llm_model, trained=True)
        load_trained_weights(model.trainable, folder)
        return model.to(device)
