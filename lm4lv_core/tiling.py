"""Any image size: split into overlapping tiles of the model's size, restore them as batches, blend the overlaps.

Overlaps are blended with linear ramps (weights fall to near zero at each tile's inner edges), so there are no seams.
Spatial tasks (rotate, flip) act on the whole image: each restored tile is placed where its content lands in the
rotated / flipped output (`Task.box`: a tile at (x, y) of a W-wide image goes to (y, W - x - s) for a 90-degree
counter-clockwise rotation and to (W - x - s, y) for a horizontal flip).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .generate import Finished
from .tasks import get_task


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets that cover [0, length) with tiles of `tile` px overlapping by at least `overlap` px."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    count = int(np.ceil((length - tile) / stride)) + 1
    return [int(round(i * (length - tile) / (count - 1))) for i in range(count)]


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """(tile, tile) weights: 1 in the centre, linear ramps over `overlap` px at every edge."""
    ramp = np.ones(tile)
    if overlap > 0:
        edge = (np.arange(overlap) + 0.5) / overlap
        ramp[:overlap], ramp[-overlap:] = edge, edge[::-1]
    return np.outer(ramp, ramp)


def place(task: str, x: int, y: int, size: int, width: int, height: int) -> tuple[int, int]:
    """Top-left corner, in the output image, of the restored tile whose input sits at (x, y)."""
    return get_task(task).box((x, y, x + size, y + size), width, height)[:2]


def output_size(task: str, width: int, height: int) -> tuple[int, int]:
    return get_task(task).box((0, 0, width, height), width, height)[2:]


@dataclass
class TileProgress:
    done: int  # tiles restored so far
    total: int
    preview: Image.Image  # the output so far (not yet restored areas: the MAE-r of the input)


@dataclass
class TiledResult:
    restored: Image.Image
    mae_r: Image.Image
    text: str  # the LLM's text for the first tile
    tokens: torch.Tensor  # (tiles, N, vision_dim)


def restore_tiled(model, image: Image.Image, task: str, overlap: int = 16, batch_size: int = 16,
                  progress: Callable[[int, int], None] | None = None, **generate_options):
    """-> (restored image, MAE-r image, LLM text of the first tile, visual tokens (tiles, N, D)) at full size."""
    for event in iter_restore_tiled(model, image, task, overlap, batch_size, previews=False, **generate_options):
        if isinstance(event, TileProgress) and progress is not None:
            progress(event.done, event.total)
        if isinstance(event, TiledResult):
            return event.restored, event.mae_r, event.text, event.tokens
    raise RuntimeError("tiled restoration ended without a result")


def reconstruct_tiled(model, image: Image.Image, overlap: int = 16, batch_size: int = 16) -> Image.Image:
    """The MAE-r baseline of an image of any size, through the same tiles and blending as `restore_tiled`."""
    *_, result = iter_restore_tiled(model, image, "denoise", overlap, batch_size, previews=False, mae_r_only=True)
    return result.mae_r


@torch.inference_mode()
def iter_restore_tiled(model, image: Image.Image, task: str, overlap: int = 16, batch_size: int = 16,
                       previews: bool = True, mae_r_only: bool = False, **generate_options):
    """Yield a `TileProgress` after each batch of tiles, then the `TiledResult`.

    The MAE-r of every tile is computed first, so previews show restored tiles over the MAE-r of the rest;
    `mae_r_only` stops there (the MAE-r baseline at full size)."""
    size = model.image_size
    width, height = image.size
    pad_w, pad_h = max(0, size - width), max(0, size - height)
    array = np.asarray(image.convert("RGB"))
    if pad_w or pad_h:  # smaller than one tile: reflect-pad, restore, crop back
        array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(array.shape[:2]) > 1 else "edge")
    full_h, full_w = array.shape[:2]
    boxes = [(x, y) for y in tile_starts(full_h, size, overlap) for x in tile_starts(full_w, size, overlap)]
    out_w, out_h = output_size(task, full_w, full_h)
    restored = np.zeros((out_h, out_w, 3))
    mae_r = np.zeros((out_h, out_w, 3))
    weights = np.zeros((out_h, out_w, 1))
    window = blend_window(size, overlap)[..., None]  # symmetric, so rotation/flip leave it unchanged
    vision, text, all_tokens = model.vision, "", []
    lq_all = []
    for start in range(0, len(boxes), batch_size):  # MAE-r of all tiles first (cheap): the backdrop of previews
        chunk = boxes[start:start + batch_size]
        tiles = [Image.fromarray(array[y:y + size, x:x + size]) for x, y in chunk]
        lq = vision.encode(vision.preprocess(tiles))  # (b, N, D)
        lq_all.append(lq)
        for (x, y), rec in zip(chunk, vision.postprocess(vision.decode(lq))):
            ox, oy = place(task, x, y, size, full_w, full_h)
            mae_r[oy:oy + size, ox:ox + size] += window * np.asarray(get_task(task).transform(rec), dtype=np.float64)
            weights[oy:oy + size, ox:ox + size] += window
    mae_r_image = Image.fromarray(np.clip(mae_r / weights, 0, 255).round().astype(np.uint8))
    if mae_r_only:
        mae_r_image = _crop(mae_r_image, task, width, height, full_w, full_h)
        yield TiledResult(mae_r_image, mae_r_image, "", torch.cat(lq_all).cpu())
        return
    done_weights = np.zeros_like(weights)
    for batch_index, start in enumerate(range(0, len(boxes), batch_size)):
        chunk = boxes[start:start + batch_size]
        lq = lq_all[batch_index]
        finished = {e.row: e for e in model.events(lq, [task] * len(chunk), **generate_options)
                    if isinstance(e, Finished)}
        tokens = torch.stack([finished[i].image_or(lq[i]) for i in range(len(chunk))])
        if start == 0:
            text = finished[0].text
        all_tokens.append(tokens.cpu())
        outs = vision.postprocess(vision.decode(tokens.to(lq.device)))
        for (x, y), out in zip(chunk, outs):
            ox, oy = place(task, x, y, size, full_w, full_h)
            restored[oy:oy + size, ox:ox + size] += window * np.asarray(out, dtype=np.float64)
            done_weights[oy:oy + size, ox:ox + size] += window
        done = min(start + batch_size, len(boxes))
        preview = None
        if previews:  # restored where tiles are done, blended into the MAE-r elsewhere
            covered = np.minimum(done_weights / weights, 1.0)
            mix = restored / np.maximum(done_weights, 1e-12) * covered + (mae_r / weights) * (1 - covered)
            preview = _crop(Image.fromarray(np.clip(mix, 0, 255).round().astype(np.uint8)), task, width, height,
                            full_w, full_h)
        yield TileProgress(done, len(boxes), preview)
    restored_image = Image.fromarray(np.clip(restored / weights, 0, 255).round().astype(np.uint8))
    yield TiledResult(_crop(restored_image, task, width, height, full_w, full_h),
                      _crop(mae_r_image, task, width, height, full_w, full_h), text, torch.cat(all_tokens))


def _crop(image: Image.Image, task: str, width: int, height: int, full_w: int, full_h: int) -> Image.Image:
    if (full_w, full_h) == (width, height):
        return image
    return image.crop(get_task(task).box((0, 0, width, height), full_w, full_h))  # the unpadded part
