"""LM4LV: a frozen LLM + a frozen ViT-MAE, bridged by two linear adapters and per-task token sets."""

from __future__ import annotations

import inspect
import os
import warnings
from dataclasses import asdict, replace

import torch
from torch import nn
from torch.nn import functional as F
from transformers import DynamicCache

from .checkpoint import (
    check_llm,
    checkpoint_folder,
    default_vision,
    load_checked_vision,
    load_trained_weights,
    load_vision,
    read_config,
    vision_name,
    write_checkpoint,
)
from .device import default_device, default_llm_dtype
from .errors import CheckpointError, InputError
from .generate import GENERATION_SLACK
from .heads import PAPER_INTERFACE, HeadsConfig, Interface, LM4LVHeads
from .llm import EMBEDDED_LLM, head_dim, load_llm, randomly_initialised, requested_llm, seen_embeddings
from .lora import attach_lora, save_peft_adapter
from .restore import Restorer
from .sequence import HQ, LQ, TASK, TEXT, Layout, SequenceBuilder
from .tasks import SANITY_TASKS, TASKS
from .trainable import Trainable
from .vision import VisionModule, weights_fingerprint


class LM4LV(Restorer, Trainable, nn.Module):
    """The paper's model (variant "lm4lv"), or the same with a randomly initialised frozen LLM ("random-llm")."""

    autoregressive = True
    has_linear_readout = True

    def __init__(self, llm, tokenizer, vision: VisionModule, heads: LM4LVHeads, trained: bool = True):
        super().__init__()
        self.llm, self.tokenizer, self.vision, self.heads = llm, tokenizer, vision, heads
        self.trained = trained
        self.llm.requires_grad_(False)
        self.vision.requires_grad_(False)
        if heads.config.lora_rank > 0:  # the lm4lv-lora control: trained low-rank pairs in the LLM, saved with heads
            heads.lora = attach_lora(
                self.llm, heads.config.lora_rank, heads.config.lora_alpha, seed=heads.config.extra.get("lora_seed", 0)
            ).to(next(heads.parameters()).device)
        self.sequences = SequenceBuilder(tokenizer, vision.num_tokens, heads.config.num_task_tokens)
        self.prompt_layout = self.sequences.prompt()
        self.training_layout = self.sequences.training()
        self._prefix_key, self._prefix = None, []  # see constant_prefix
        self._compiled = self._compiled_forward = None  # see compile_llm
        forward_params = inspect.signature(self.llm.base_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_params else "past_key_values"

    # ------------------------------------------------------------------------------------------------ sizes
    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.heads.task_tokens.keys())

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    @property
    def llm_dtype(self) -> torch.dtype:
        return self.llm.get_input_embeddings().weight.dtype

    @property
    def generation_bytes_per_row(self) -> int:
        """Bytes of one generated image's preallocated KV cache: layers x (keys, values) x KV heads x head size x
        positions (prompt + the generator's default budget) x the LLM's element size."""
        config = self.llm.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        positions = len(self.prompt_layout) + self.num_visual_tokens + GENERATION_SLACK
        return config.num_hidden_layers * 2 * heads * head_dim(config) * positions * self.llm_dtype.itemsize

    @property
    def variant(self) -> str:
        return "lm4lv-lora" if self.heads.config.lora_rank > 0 else self.heads.config.extra.get("variant", "lm4lv")

    @property
    def llm_frozen(self) -> bool:
        """False for the lm4lv-lora control, whose LLM has trained low-rank pairs."""
        return self.heads.config.lora_rank == 0

    @property
    def llm_name(self) -> str:
        """The LLM the checkpoint was trained with, as recorded ("smollm2", "gemma3", a hub id or a path)."""
        return self.heads.config.llm

    @property
    def position_embeddings(self) -> bool:
        """Whether a learned vector per visual-token index was trained (outside the paper's trainable set)."""
        return self.heads.config.position_embeddings

    @property
    def trainable(self) -> nn.Module:
        """Everything that is trained: the adapters and task tokens (and the LoRA pairs of lm4lv-lora)."""
        return self.heads

    def check_task(self, task: str) -> str:
        if task not in self.heads.task_tokens:
            raise InputError(f"Unknown task {task!r}; choose one of: {', '.join(self.tasks)}.")
        return task

    # ------------------------------------------------------------------------------------------------ LLM pieces
    def hidden_states(self, embeds: torch.Tensor, past_key_values=None):
        """(B, T, llm_dim) input embeddings -> ((B, T, llm_dim) final hidden states after the last norm, fp32; cache)."""
        kwargs = {}
        if past_key_values is not None:  # the cache is updated in place; its keyword was renamed in transformers 5
            kwargs = {self._cache_kwarg: past_key_values, "use_cache": True}
        forward = self._compiled or self.llm.base_model
        out = forward(inputs_embeds=embeds.to(self.llm_dtype), **kwargs)
        return out.last_hidden_state.float(), past_key_values

    def hidden_states_and_streams(self, embeds: torch.Tensor, past_key_values, layers):
        """`hidden_states` (eager, for training) plus, per LLM layer in `layers`, the residual stream entering it
        (B, T, llm_dim) fp32, before that layer's input norm (0: the input embeddings)."""
        out = self.llm.base_model(
            inputs_embeds=embeds.to(self.llm_dtype),
            output_hidden_states=True,
            **{self._cache_kwarg: past_key_values, "use_cache": True},
        )
        return out.last_hidden_state.float(), [out.hidden_states[layer].float() for layer in layers]

    def compile_llm(self, enabled: bool = True) -> bool:
        """Run the frozen LLM through `torch.compile` when no gradients are needed (generation, evaluation): see
        `lm4lv_core.compiled` for what it buys and costs. Falls back to eager execution if compiling fails;
        `enabled=False` returns to eager execution (the compiled graphs are kept for a later `compile_llm()`)."""
        from .compiled import CompiledForward

        if self._compiled_forward is None and enabled:
            self._compiled_forward = CompiledForward(self.llm.base_model)
        self._compiled = self._compiled_forward if enabled else None
        return True

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """(..., llm_dim) -> (..., vocab) fp32."""
        head = self.llm.get_output_embeddings()
        return head(hidden.to(head.weight.dtype)).float()

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.llm.get_input_embeddings()(ids.to(self.device)).float()

    def visual_to_llm(
        self,
        tokens: torch.Tensor,
        index: torch.Tensor | None = None,
        tasks: list[str] | None = None,
        answer: bool = False,
    ) -> torch.Tensor:
        """(B, ..., vision_dim) MAE features -> (B, ..., llm_dim) input embeddings; index: see `LM4LVHeads.to_llm`;
        tasks: the rows' task names (needed by a model with an input adapter or answer positions per task); answer:
        the tokens are the answer's (HQ) image."""
        return self.heads.to_llm(tokens, index, tasks, answer)

    def llm_to_visual(self, hidden: torch.Tensor, tasks: list[str] | None = None) -> torch.Tensor:
        """(B, ..., llm_dim) final hidden states -> (B, ..., vision_dim) predicted MAE features; tasks: the rows' task
        names (needed by a model with a readout per task)."""
        return self.heads.to_visual(hidden, tasks)

    def embed_layout(self, layout: Layout, lq: torch.Tensor, tasks: list[str], hq: torch.Tensor | None = None):
        """Fill a layout's slots, as LLaVA splices image features into `inputs_embeds`, with explicit count checks.

        lq, hq: (B, N, vision_dim) visual tokens; tasks: B names. Returns (B, T, llm_dim) fp32.
        """
        batch = lq.shape[0]
        if len(tasks) != batch:
            raise ValueError(f"{len(tasks)} task names for {batch} images")
        embeds = self.embed_tokens(layout.ids).unsqueeze(0).repeat(batch, 1, 1)  # (B, T, llm_dim)
        fills = {LQ: self.visual_to_llm(lq, tasks=tasks), TASK: self.heads.task_embeddings(tasks)}
        if hq is not None:
            fills[HQ] = self.visual_to_llm(hq, tasks=tasks, answer=True)
        for kind in (LQ, TASK, HQ):
            slots = layout.positions(kind)
            if kind not in fills:
                if len(slots):
                    raise ValueError(f"The layout has {len(slots)} slots of kind {kind} but no features for them")
                continue
            values = fills[kind]  # (B, n, llm_dim)
            if values.shape[1] != len(slots):
                raise ValueError(
                    f"Feature count mismatch: {values.shape[1]} tokens for {len(slots)} slots (kind {kind})"
                )
            embeds[:, slots] = values.to(embeds.dtype)
        return embeds

    # ------------------------------------------------------------------------------------------------ training
    def forward_loss(
        self,
        lq: torch.Tensor,
        hq: torch.Tensor,
        tasks: list[str],
        ce_weight: float = 1.0,
        fed: torch.Tensor | None = None,
        feed=None,
        carry_layers: tuple[int, ...] | list[int] = (),
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced loss: CE on the answer's text tokens + L2 on each next HQ visual token (MAE space).

        lq, hq: (B, N, vision_dim). `fed`: the HQ tokens given to the LLM (default: hq itself); `feed`: instead, a
        function of the model's own teacher-forced predictions (B, N, vision_dim; a no-grad pass) that returns the fed
        tokens (the training objectives' self-conditioning, `train.objectives.self_conditioning`). The targets are
        always hq.
        `carry_layers`: also return "carry", per layer the residual stream entering that LLM layer at the LQ positions
        (B, N, llm_dim), for an auxiliary loss on what the image tokens still hold there (`train.carry`).

        The sequence runs in segments through the KV cache, with the loss of one pass over all of it: the constant
        text before the LQ image once per model (frozen LLM), the user turn once per call (shared with the
        self-conditioning pass), the answer once per pass.
        """
        if fed is not None and feed is not None:
            raise ValueError("Give either fed tokens or a feed function, not both.")
        layout = self.training_layout
        prefix, split = self.constant_prefix(), int(layout.positions(HQ)[0])
        start = self.prefix_length if prefix else 0
        batch = lq.shape[0]
        embeds = self.embed_layout(layout, lq, tasks, hq)  # (B, T, llm_dim), the HQ slots teacher-forced
        cache = self._cache([(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix])
        if not carry_layers:
            user, _ = self.hidden_states(embeds[:, start:split], cache)  # (B, split - start, llm_dim)
        else:
            user, streams = self.hidden_states_and_streams(embeds[:, start:split], cache, carry_layers)
            lq_positions = layout.positions(LQ) - start
            carried = [stream[:, lq_positions.to(stream.device)] for stream in streams]  # each (B, N, llm_dim)
        if feed is not None:
            with torch.no_grad():
                copy = self._cache([(layer.keys.detach(), layer.values.detach()) for layer in cache.layers])
                answer, _ = self.hidden_states(embeds[:, split:], copy)  # (B, T - split, llm_dim)
                own = self._predictions(torch.cat([user.detach(), answer], dim=1), start, tasks)  # (B, N, vision_dim)
            fed = feed(own)
        if fed is not None:
            embeds = self.embed_layout(layout, lq, tasks, fed)
        answer, _ = self.hidden_states(embeds[:, split:], cache)
        hidden = torch.cat([user, answer], dim=1)  # (B, T - start, llm_dim): positions start .. T-1
        pred = self._predictions(hidden, start, tasks)  # (B, N, vision_dim)
        l2 = F.mse_loss(pred.float(), hq.float())  # in MAE feature space
        positions, targets = layout.ce_targets()
        logits = self.logits(hidden[:, (positions - start).to(hidden.device)])  # (B, n_text, vocab)
        ce = F.cross_entropy(logits.flatten(0, 1), targets.to(hidden.device).repeat(hq.shape[0]))
        terms = {"loss": ce_weight * ce + l2, "ce": ce, "l2": l2, "pred": pred}
        if carry_layers:
            terms["carry"] = carried
        return terms

    def _predictions(self, hidden: torch.Tensor, start: int, tasks: list[str]) -> torch.Tensor:
        """(B, T - start, llm_dim) hidden states of positions start.. -> (B, N, vision_dim) predicted HQ tokens."""
        sources = self.training_layout.regression_sources() - start
        return self.llm_to_visual(hidden[:, sources.to(hidden.device)], tasks)

    def _cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        """A KV cache holding (keys, values) per layer, each (B, kv_heads, T, head_dim); empty for []."""
        return DynamicCache(ddp_cache_data=layers or None, config=self.llm.config)

    @property
    def prefix_length(self) -> int:
        """Positions of constant text before the first slot (the system prompt, `user: <Img>` or `user:` when the
        task tokens come first), in both layouts."""
        kinds = self.prompt_layout.kinds
        return int((kinds != TEXT).nonzero()[0])

    def constant_prefix(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values (1, kv_heads, prefix_length, head_dim) per layer of the constant text before the first slot,
        computed once per device and dtype and reused by training and generation; [] while the LLM is trained (LoRA)."""
        if not self.llm_frozen or self.prefix_length == 0:
            return []
        key = (self.device, self.llm_dtype)
        if self._prefix_key != key:
            with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable by training too
                cache = self._cache([])
                self.hidden_states(self.embed_tokens(self.prompt_layout.ids[: self.prefix_length])[None], cache)
            self._prefix_key, self._prefix = key, [(layer.keys, layer.values) for layer in cache.layers]
        return self._prefix

    @torch.no_grad()
    def readout(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str], fed: torch.Tensor | None = None):
        """For a least-squares fit of the readout: [(adapter_out layer, hidden states (M, llm_dim) that predict HQ
        tokens, targets (M, vision_dim))], one entry per readout the batch's tasks use (one if it is shared).
        `fed`: the HQ tokens given to the LLM (default: hq, teacher forcing; the model's own generated tokens give
        exactly the hidden states of free running)."""
        layout = self.training_layout
        fed = hq if fed is None else fed
        hidden, _ = self.hidden_states(self.embed_layout(layout, lq, tasks, fed))  # (B, T, llm_dim)
        sources = hidden[:, layout.regression_sources().to(hidden.device)]  # (B, N, llm_dim)
        targets = self.heads.written(hq)  # (B, N, vision_dim): what adapter_out writes
        groups = {}
        for row, task in enumerate(tasks):
            layer = self.heads.readout(task)
            groups.setdefault(id(layer), (layer, []))[1].append(row)
        return [
            (layer, sources[rows].reshape(-1, sources.shape[-1]), targets[rows].reshape(-1, hq.shape[-1]))
            for layer, rows in groups.values()
        ]

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The training forward (so that wrappers such as DDP see it): see `forward_loss`."""
        return self.forward_loss(*args, **kwargs)

    # ------------------------------------------------------------------------------------------------ inference
    def events(self, lq: torch.Tensor, tasks: list[str], **generate_options):
        """Generation events for a batch of LQ visual tokens (B, N, vision_dim): see `generate.generate`."""
        from .generate import generate

        return generate(self, lq, tasks, **generate_options)

    # ------------------------------------------------------------------------------------------------ checkpoints
    @classmethod
    def build(
        cls,
        llm: str | None = None,
        vision: str | os.PathLike | VisionModule | None = None,
        tasks=TASKS + SANITY_TASKS,
        num_task_tokens: int = 10,
        device=None,
        dtype=None,
        seed: int = 0,
        random_llm_seed: int | None = None,
        lora_rank: int = 0,
        lora_alpha: float | None = None,
        interface: Interface = PAPER_INTERFACE,
    ):
        """A new, untrained LM4LV (for training): frozen LLM and vision module, freshly initialised heads.

        interface: the adapters' options beyond the paper's (`heads.Interface`; with whitening, set the basis with
        `heads.set_whitening` after any initialisation of the adapters).
        random_llm_seed: replace the LLM's weights by a random initialisation of the same architecture (the
        "random-llm" control); the tokenizer and chat template stay.
        lora_rank: LoRA of this rank on the LLM's attention (the "lm4lv-lora" control: the LLM is then not frozen);
        lora_alpha: its scale numerator (default 2 x rank).
        """
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_llm_dtype(device)
        llm = requested_llm(llm)
        model, tokenizer = load_llm(llm, dtype=dtype, device=device)
        if random_llm_seed is not None:
            model = randomly_initialised(model, random_llm_seed)
        vision_module = vision if isinstance(vision, VisionModule) else load_vision(vision)
        config = HeadsConfig(
            vision_dim=vision_module.dim,
            llm_dim=model.config.hidden_size,
            tasks=tuple(tasks),
            num_task_tokens=num_task_tokens,
            llm=llm or EMBEDDED_LLM,
            llm_fingerprint=weights_fingerprint(model),
            vision=vision_name(vision),
            vision_fingerprint=vision_module.fingerprint(),
            num_visual_tokens=vision_module.num_tokens,
            lora_rank=lora_rank,
            lora_alpha=float(lora_alpha or 2 * lora_rank) if lora_rank else 0.0,
            **interface.config_fields(),
        )
        if lora_rank:
            config.extra = {"lora_seed": seed}
        if random_llm_seed is not None:
            config.extra.update(variant="random-llm", random_llm_seed=random_llm_seed)
        heads = LM4LVHeads(config)
        heads.initialize(seen_embeddings(model), torch.Generator().manual_seed(seed))
        return cls(model, tokenizer, vision_module.to(device).eval(), heads.to(device), trained=False)

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike | None = None,
        llm: str | None = None,
        vision: str | os.PathLike | None = None,
        device=None,
        dtype=None,
    ) -> LM4LV:
        """Load a trained checkpoint (a folder or hub id; default: the shipped embedded default).

        `llm` / `vision` override where the frozen models come from (default: what the checkpoint names); a
        checkpoint is refused if their weights are not the ones it was trained with.
        """
        folder = checkpoint_folder(path)
        if folder is None:  # nothing shipped yet
            warnings.warn(
                "NO TRAINED LM4LV CHECKPOINT FOUND: using an UNTRAINED initialisation of the adapters and "
                "task tokens. Its outputs are not restorations. Train one with `python -m train.train_lm4lv`.",
                stacklevel=2,
            )
            return cls.build(llm=llm, vision=vision or default_vision(), device=device, dtype=dtype)
        config = read_config(folder)
        device = torch.device(device) if device is not None else default_device()
        dtype = dtype or default_llm_dtype(device)
        vision_module = load_checked_vision(vision, config.vision, config.vision_fingerprint, folder)
        llm = requested_llm(llm)
        model, tokenizer = load_llm(llm or config.llm, dtype=dtype, device=device)
        if config.extra.get("random_llm_seed") is not None:  # the random-llm control: rebuild the same random weights
            model = randomly_initialised(model, int(config.extra["random_llm_seed"]))
        check_llm(model, config.llm_fingerprint, folder, config.llm, llm)
        if model.config.hidden_size != config.llm_dim or vision_module.dim != config.vision_dim:
            raise CheckpointError(f"The checkpoint {folder} does not fit this LLM / vision module (dimensions).")
        restorer = cls(model, tokenizer, vision_module.to(device).eval(), LM4LVHeads(config).to(device), trained=True)
        load_trained_weights(restorer.heads, folder)  # after construction: LoRA pairs are attached there
        return restorer

    def save_pretrained(self, path: str | os.PathLike, vision_path: str | None = None) -> None:
        """Write heads (safetensors) + config (JSON). `vision_path` is recorded as the vision module's location
        (relative paths are resolved against the checkpoint folder when loading).
        The lm4lv-lora control also writes its LoRA pairs in PEFT's format (`lora.save_peft_adapter`)."""
        config = self.heads.config
        if vision_path is not None:
            config = replace(config, vision=vision_path)
        write_checkpoint(path, self.heads, asdict(config))
        if config.lora_rank > 0:
            save_peft_adapter(str(path), self.heads.lora, config.lora_rank, config.lora_alpha, config.llm)
