"""From user images to results: load, fit to the model's size, MAE-r, generate, decode."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from PIL import Image

from .generate import Finished
from .images import fit_square, load_image


@dataclass
class Prepared:
    """First event of a restoration: the model-size input, its MAE-r and visual tokens, and the input notes."""

    row: int
    input: Image.Image
    mae_r: Image.Image
    lq: torch.Tensor  # (N, vision_dim)
    notes: list[str] = field(default_factory=list)


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
    from .model import Result

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
    from .model import Result
    from .tiling import restore_tiled

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
