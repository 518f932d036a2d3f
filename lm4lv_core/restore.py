"""The image-level API every variant shares: from user images to `Result`s (load, fit or tile, MAE-r, generate,
decode), streamed as events. A variant implements the `Restorer` interface; `Restorer` adds the rest."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from PIL import Image

from .errors import InputError
from .explain import CopyMap, copy_map, recording
from .generate import Finished, TextPiece, VisualToken
from .images import cap_size, fit_square, load_image
from .tiling import TileProgress, iter_restore_tiled
from .vision import VisionModule

MODES = ("tile", "resize")


def check_mode(mode: str) -> str:
    """ "tile" (the image's own size, in tiles) or "resize" (the model's size); anything else is an InputError."""
    if mode not in MODES:
        raise InputError(f"Unknown mode {mode!r}; use 'tile' or 'resize'.")
    return mode


@dataclass
class Prepared:
    """First event of a restoration: the model-size input, its MAE-r and visual tokens, and the input notes."""

    row: int
    input: Image.Image
    mae_r: Image.Image
    lq: torch.Tensor  # (N, vision_dim)
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    """One restored image. `tokens`: (N, vision_dim) generated visual tokens; `notes`: what was done to the input."""

    task: str
    image: Image.Image
    mae_r: Image.Image
    input: Image.Image
    text: str
    tokens: torch.Tensor
    notes: list[str] = field(default_factory=list)
    copy: CopyMap | None = None  # which LQ token each output token read (`follow(..., explain=True)`)


@dataclass
class Progress:
    """One step of a streamed restoration (`Restorer.follow`): `done` of `total` visual tokens or tiles, the LLM's
    text so far, and a preview of the output (restored where done, the MAE-r elsewhere; None between previews)."""

    done: int
    total: int
    unit: str  # "visual token" or "tile"
    text: str
    preview: Image.Image | None = None
    copy: CopyMap | None = None  # with `explain=True`: the copy map so far, at each preview


class Restorer(ABC):
    """The image-level API every model variant shares, and the few members a variant implements for it.

    A variant sets `vision` (its `VisionModule`), `trained` and `autoregressive`, and implements the abstract members
    below; everything else (sizes, `stream`, `follow`, `restore`, `restore_batch`) is shared. Its training side is
    `trainable.Trainable`."""

    vision: VisionModule
    trained: bool
    autoregressive: bool
    llm_frozen = True  # False only where an LLM's own weights were trained (the lm4lv-lora control)
    llm_name = ""  # the frozen LLM the checkpoint was trained with, where it has one (`llm.llm_label` names it)
    position_embeddings = False  # True where a learned vector per visual-token index was trained (LM4LV's option)
    generation_bytes_per_row = 0  # memory one generated image holds while it is generated (LM4LV: its KV cache)

    @property
    @abstractmethod
    def variant(self) -> str:
        """The variant's name (`lm4lv_core.variants.VARIANTS`)."""

    @abstractmethod
    def check_task(self, task: str) -> str:
        """The task if the model has its task tokens, else an InputError."""

    @abstractmethod
    def events(self, lq: torch.Tensor, tasks: list[str], **options):
        """The generation events (`generate.TextPiece`, `VisualToken`, `ImageDone`, `Finished`) of a batch of LQ
        visual tokens (B, N, vision_dim)."""

    def push_to_hub(self, repo_id: str, **options) -> str:
        """Upload this model to the Hub, its vision module inside (see `checkpoint.push_to_hub` for `options`);
        `from_pretrained(repo_id)` / `load_model(repo_id)` load it back."""
        from .checkpoint import push_to_hub

        return push_to_hub(self, repo_id, **options)

    @abstractmethod
    def save_pretrained(self, path, vision_path: str | None = None) -> None:
        """Write the checkpoint (`lm4lv_core.checkpoint`); the model's own config is left unchanged."""

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_visual_tokens(self) -> int:
        return self.vision.num_tokens

    def compile_llm(self, enabled: bool = True) -> bool:
        """Run the model's LLM under torch.compile for generation (`lm4lv_core.compiled`); returns whether there is
        an autoregressive LLM to compile (the one-pass controls have none and run as they are)."""
        return False

    def stream(self, image, task: str, **options):
        """Events (`generate.TextPiece`, `VisualToken`, `ImageDone`, `Finished`) for one image, then a `Result`."""
        yield from stream_restore(self, [image], [task], **options)

    def fit(self, source, mode: str = "resize", max_side: int | None = None) -> tuple[Image.Image, list[str]]:
        """A user image (path, PIL image or uint8 array) as the model will see it, with notes on what was done:
        mode "resize": center-cropped and resized to the model's size; "tile": its own size, the longest side capped
        at `max_side` if given."""
        loaded = load_image(source)
        if check_mode(mode) == "resize":
            image, notes = fit_square(loaded.image, self.image_size)
        else:
            image, notes = cap_size(loaded.image, max_side) if max_side else (loaded.image, [])
        return image, loaded.notes + notes

    @torch.inference_mode()
    def reconstruct(self, image, mode: str = "resize", overlap: int = 16, batch_size: int | None = None) -> Image.Image:
        """MAE-r, the baseline: the vision module's reconstruction of `image`, at the model's size ("resize") or at
        the image's own size through the same tiles and blending as a tiled restoration ("tile")."""
        fitted, _ = self.fit(image, mode)
        if mode == "resize":
            return self.vision.reconstruct(fitted)
        *_, result = iter_restore_tiled(self, fitted, "denoise", overlap, batch_size, previews=False, mae_r_only=True)
        return result.mae_r

    def follow(
        self,
        image,
        task: str,
        mode: str = "tile",
        preview_every: int = 4,
        overlap: int = 16,
        batch_size: int | None = None,
        explain: bool = False,
        **generate_options,
    ):
        """Restore one image, streaming: `Progress` events (previews every `preview_every` visual tokens in mode
        "resize", after every batch of tiles in mode "tile"; 0: none), then the `Result` (see `restore`).

        explain (mode "resize", models that generate with an LLM): the Progress events with a preview and the
        Result carry a `CopyMap` (`lm4lv_core.explain`): which LQ token each output token read."""
        self.check_task(task)
        if check_mode(mode) == "resize":
            yield from _follow_tokens(self, image, task, preview_every, explain, **generate_options)
        else:
            yield from _follow_tiles(self, image, task, preview_every > 0, overlap, batch_size, **generate_options)

    def restore_batch(self, images: list, tasks: list[str] | str, mode: str = "tile", **options) -> list[Result]:
        """Restore several images. mode "resize": center-crop and resize each to the model's size and generate them
        as one batch; mode "tile": keep each image's size (see `restore`)."""
        tasks = [tasks] * len(images) if isinstance(tasks, str) else list(tasks)
        if check_mode(mode) == "tile":
            return [self._restore_tiled(image, task, **options) for image, task in zip(images, tasks)]
        return [e for e in stream_restore(self, images, tasks, **options) if isinstance(e, Result)]

    def restore(self, image, task: str, mode: str = "tile", **options) -> Result:
        """Restore one image (a path, PIL image or uint8 array) with a task-token set.

        mode "tile" (default): any size; overlapping tiles of the model's size are restored in batches and blended
        (options: overlap=16, batch_size (tiles generated together; default: `tiling.tile_batch_size`),
        progress=callable(done, total)); the output keeps the input's size.
        mode "resize": center-crop and resize to the model's size (options: generation options).
        """
        return self.restore_batch([image], [task], mode=mode, **options)[0]

    def _restore_tiled(self, image, task: str, progress=None, **options) -> Result:
        for event in self.follow(image, task, mode="tile", preview_every=0, **options):
            if isinstance(event, Progress) and progress is not None:
                progress(event.done, event.total)
        return event


@torch.inference_mode()
def preview(model, generated: list[torch.Tensor] | torch.Tensor, fill: torch.Tensor) -> Image.Image:
    """Decode the visual tokens generated so far, the rest taken from `fill` (N, vision_dim), e.g. the MAE-r tokens."""
    k = len(generated)
    tokens = fill.clone()
    if k:
        tokens[:k] = torch.stack(list(generated)) if isinstance(generated, list) else generated
    return model.vision.postprocess(model.vision.decode(tokens[None].to(model.device)))[0]


@torch.inference_mode()
def prepare_inputs(model, images: list, tasks: list[str]):
    """Check tasks and images; returns (list of model-size PIL inputs, list of note lists)."""
    for task in tasks:
        model.check_task(task)
    fitted = [model.fit(image, "resize") for image in images]
    return [image for image, _ in fitted], [notes for _, notes in fitted]


@torch.inference_mode()
def stream_restore(model, images: list, tasks: list[str], **generate_options):
    """Yield a `Prepared` per image, the generation events of the batch, then one `Result` per image (in order)."""
    if len(images) != len(tasks):
        raise ValueError(f"{len(images)} images but {len(tasks)} tasks")
    inputs, notes = prepare_inputs(model, images, tasks)
    vision = model.vision
    lq = vision.encode(vision.preprocess(inputs))  # (B, N, vision_dim)
    mae_r = vision.postprocess(vision.decode(lq))
    for i in range(len(inputs)):
        yield Prepared(i, inputs[i], mae_r[i], lq[i], list(notes[i]))
    finished: dict[int, Finished] = {}
    for event in model.events(lq, tasks, **generate_options):
        if isinstance(event, Finished):
            finished[event.row] = event
        yield event
    for i, task in enumerate(tasks):
        done = finished[i]
        row_notes = list(notes[i])
        if not model.trained:
            row_notes.append("UNTRAINED adapters: the output is not a restoration")
        if not done.has_image(model.num_visual_tokens):
            row_notes.append("the model produced no complete image; showing MAE-r")
            tokens, image = lq[i], mae_r[i]
        else:
            tokens = done.tokens
            image = vision.postprocess(vision.decode(tokens[None].to(lq.device)))[0]
        yield Result(
            task=task,
            image=image,
            mae_r=mae_r[i],
            input=inputs[i],
            text=done.text,
            tokens=tokens.cpu(),
            notes=row_notes,
        )


def _follow_tokens(model, image, task: str, preview_every: int, explain: bool = False, **generate_options):
    """`Restorer.follow` in mode "resize": Progress per `preview_every` visual tokens, then the Result; with
    `explain`, the attention each visual token was written with is kept (see `lm4lv_core.explain`)."""
    text, generated, lq, read, copy = "", [], None, [], None  # read: per visual token (layers, heads, N)
    with recording(model) if explain else nullcontext() as recorder:
        for event in stream_restore(model, [image], [task], **generate_options):
            if isinstance(event, Prepared):
                lq = event.lq
                yield Progress(0, model.num_visual_tokens, "visual token", "", event.mae_r if preview_every else None)
            elif isinstance(event, TextPiece):
                text += event.text
            elif isinstance(event, VisualToken):
                generated.append(event.token)
                if recorder is not None:
                    read.append(_last_read(recorder, len(generated)))
                done = event.index + 1
                shown = preview_every and (done % preview_every == 0 or done == event.total)
                if shown and read:
                    copy = copy_map(torch.stack(read))
                yield Progress(
                    done,
                    event.total,
                    "visual token",
                    text,
                    preview(model, generated, lq) if shown else None,
                    copy if shown else None,
                )
            elif isinstance(event, Result):
                if read and (copy is None or len(copy.weights) != len(read)):  # the last preview's map, if it has all
                    copy = copy_map(torch.stack(read))
                event.copy = copy
                yield event


def _last_read(recorder, index: int) -> torch.Tensor:
    """(layers, heads, N) attention that wrote the `index`-th visual token (row 0)."""
    taken = recorder.take()
    if taken is None:
        raise RuntimeError(f"No attention weights were recorded for visual token {index}.")
    return taken[:, 0]


def _follow_tiles(model, image, task: str, previews: bool, overlap: int, batch_size: int | None, **generate_options):
    """`Restorer.follow` in mode "tile": Progress per batch of tiles, then the Result at the input's size."""
    loaded, notes = model.fit(image, "tile")
    for event in iter_restore_tiled(model, loaded, task, overlap, batch_size, previews=previews, **generate_options):
        if isinstance(event, TileProgress):
            yield Progress(event.done, event.total, "tile", "", event.preview)
    tiles = event.tokens.shape[0]
    if tiles > 1:
        notes.append(f"restored as {tiles} overlapping {model.image_size}x{model.image_size} tiles")
    if not model.trained:
        notes.append("UNTRAINED adapters: the output is not a restoration")
    yield Result(
        task=task,
        image=event.restored,
        mae_r=event.mae_r,
        input=loaded,
        text=event.text,
        tokens=event.tokens,
        notes=notes,
    )
