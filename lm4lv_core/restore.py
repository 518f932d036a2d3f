"""The image-level API every variant shares: from user images to `Result`s (load, fit or tile, MAE-r, generate,
decode), streamed as events. A variant provides `vision`, `trainable`, `trained`, `check_task` and
`events(lq, tasks, **options)` (the generation events of a batch of LQ visual tokens); `Restorer` adds the rest."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import torch
from PIL import Image

from .errors import InputError
from .generate import Finished
from .images import fit_square, load_image
from .tiling import restore_tiled
from .vision import VisionModule


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


class Restorer(ABC):
    """The interface of every model variant, and the image-level API built on it.

    A variant sets `vision` (its `VisionModule`), `trainable` (the module holding everything training updates, saved as
    the checkpoint's weights), `trained` and `autoregressive`, and implements the abstract members below; everything
    else (sizes, `stream`, `restore`, `restore_batch`) is shared."""

    vision: VisionModule
    trainable: torch.nn.Module
    trained: bool
    autoregressive: bool

    @property
    @abstractmethod
    def variant(self) -> str:
        """The variant's name (`lm4lv_core.variants.VARIANTS`)."""

    @property
    @abstractmethod
    def has_linear_readout(self) -> bool:
        """Whether `readout` applies: a linear layer maps frozen features to visual tokens."""

    @abstractmethod
    def check_task(self, task: str) -> str:
        """The task if the model has its task tokens, else an InputError."""

    @abstractmethod
    def events(self, lq: torch.Tensor, tasks: list[str], **options):
        """The generation events (`generate.TextPiece`, `VisualToken`, `ImageDone`, `Finished`) of a batch of LQ
        visual tokens (B, N, vision_dim)."""

    @abstractmethod
    def forward_loss(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str], **options) -> dict:
        """The training loss {"loss", "l2", "pred", ...} of a batch of (LQ, HQ) tokens (B, N, vision_dim)."""

    @abstractmethod
    def readout(self, lq: torch.Tensor, hq: torch.Tensor, tasks: list[str], **options):
        """(features (M, width), targets (M, vision_dim), the readout nn.Linear) for a least-squares fit; only where
        `has_linear_readout`."""

    @abstractmethod
    def save_pretrained(self, path, vision_path: str | None = None) -> None:
        """Write the checkpoint (`lm4lv_core.checkpoint`); the model's own config is left unchanged."""

    @property
    def image_size(self) -> int:
        return self.vision.image_size

    @property
    def num_visual_tokens(self) -> int:
        return self.vision.num_tokens

    def trainable_parameters(self) -> int:
        """How many parameters training updates (the variant's `trainable` module)."""
        return sum(p.numel() for p in self.trainable.parameters())

    def stream(self, image, task: str, **options):
        """Events (`generate.TextPiece`, `VisualToken`, `ImageDone`, `Finished`) for one image, then a `Result`."""
        yield from stream_restore(self, [image], [task], **options)

    def restore_batch(self, images: list, tasks: list[str] | str, mode: str = "tile", **options) -> list[Result]:
        """Restore several images. mode "resize": center-crop and resize each to the model's size and generate them
        as one batch; mode "tile": keep each image's size (see `restore`)."""
        tasks = [tasks] * len(images) if isinstance(tasks, str) else list(tasks)
        if mode == "tile":
            return [restore_tiled_result(self, image, task, **options) for image, task in zip(images, tasks)]
        if mode != "resize":
            raise InputError(f"Unknown mode {mode!r}; use 'tile' or 'resize'.")
        return [e for e in stream_restore(self, images, tasks, **options) if isinstance(e, Result)]

    def restore(self, image, task: str, mode: str = "tile", **options) -> Result:
        """Restore one image (a path, PIL image or uint8 array) with a task-token set.

        mode "tile" (default): any size; overlapping tiles of the model's size are restored in batches and blended
        (options: overlap=16, batch_size=16, progress=callable(done, total)); the output keeps the input's size.
        mode "resize": center-crop and resize to the model's size (options: generation options).
        """
        return self.restore_batch([image], [task], mode=mode, **options)[0]


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
    inputs, notes = [], []
    for image in images:
        loaded = load_image(image)
        fitted, fit_notes = fit_square(loaded.image, model.image_size)
        inputs.append(fitted)
        notes.append(loaded.notes + fit_notes)
    return inputs, notes


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
        yield Result(task=task, image=image, mae_r=mae_r[i], input=inputs[i], text=done.text, tokens=tokens.cpu(),
                     notes=row_notes)


@torch.inference_mode()
def restore_tiled_result(model, image, task: str, overlap: int = 16, batch_size: int = 16, progress=None,
                         **generate_options):
    """Restore an image of any size tile by tile (see `lm4lv_core.tiling`); the Result keeps the input's size."""

    model.check_task(task)
    loaded = load_image(image)
    restored, mae_r, text, tokens = restore_tiled(model, loaded.image, task, overlap=overlap, batch_size=batch_size,
                                                  progress=progress, **generate_options)
    notes = list(loaded.notes)
    tiles = tokens.shape[0]
    if tiles > 1:
        notes.append(f"restored as {tiles} overlapping {model.image_size}x{model.image_size} tiles")
    if not model.trained:
        notes.append("UNTRAINED adapters: the output is not a restoration")
    return Result(task=task, image=restored, mae_r=mae_r, input=loaded.image, text=text, tokens=tokens, notes=notes)
