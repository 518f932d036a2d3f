"""Any image size: split into overlapping tiles of the model's size, restore them as batches, blend the overlaps.

Overlaps are blended with linear ramps (weights fall to near zero at each tile's inner edges), so there are no seams.
Spatial tasks (rotate, flip) act on the whole image: each restored tile is placed where its content lands in the
rotated / flipped output (`Task.box`: a tile at (x, y) of a W-wide image goes to (y, W - x - s) for a 90-degree
counter-clockwise rotation and to (W - x - s, y) for a horizontal flip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .generate import Finished
from .tasks import get_task

TILE_MEMORY_MB = 1024  # generation state of one tile batch (see tile_batch_size)
MAX_TILE_BATCH = 64


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


@dataclass
class TileGrid:
    """Where the tiles of one image lie: `boxes` (x, y) of `size`-px tiles over the (reflect-padded) `array`, and
    where each lands in the task's output."""

    task: str
    size: int
    width: int  # the input's size, before padding
    height: int
    array: np.ndarray  # (full_h, full_w, 3) uint8, padded to at least one tile
    boxes: list[tuple[int, int]]
    window: np.ndarray  # (size, size, 1) blending weights; symmetric, so rotation/flip leave it unchanged

    @classmethod
    def of(cls, image: Image.Image, task: str, size: int, overlap: int) -> TileGrid:
        width, height = image.size
        pad_w, pad_h = max(0, size - width), max(0, size - height)
        array = np.asarray(image.convert("RGB"))
        if pad_w or pad_h:  # smaller than one tile: reflect-pad, restore, crop back
            mode = "reflect" if min(array.shape[:2]) > 1 else "edge"
            array = np.pad(array, ((0, pad_h), (0, pad_w), (0, 0)), mode=mode)
        full_h, full_w = array.shape[:2]
        boxes = [(x, y) for y in tile_starts(full_h, size, overlap) for x in tile_starts(full_w, size, overlap)]
        return cls(task, size, width, height, array, boxes, blend_window(size, overlap)[..., None])

    def canvas(self) -> np.ndarray:
        """(out_h, out_w, 1) zeros of the task's output size (padded): add channels by broadcasting."""
        out_w, out_h = output_size(self.task, self.array.shape[1], self.array.shape[0])
        return np.zeros((out_h, out_w, 1))

    def tiles(self, chunk: list[tuple[int, int]]) -> np.ndarray:
        """(b, size, size, 3) uint8: the tiles at the boxes `chunk` (the vision module's array entry)."""
        return np.stack([self.array[y : y + self.size, x : x + self.size] for x, y in chunk])

    def add(self, canvas: np.ndarray, weights: np.ndarray, chunk, images) -> None:
        """Blend output tiles `images` (PIL, for the boxes `chunk`) into `canvas` (out_h, out_w, 3) and `weights`."""
        full_h, full_w = self.array.shape[:2]
        for (x, y), out in zip(chunk, images):
            ox, oy = place(self.task, x, y, self.size, full_w, full_h)
            canvas[oy : oy + self.size, ox : ox + self.size] += self.window * np.asarray(out, dtype=np.float64)
            weights[oy : oy + self.size, ox : ox + self.size] += self.window

    def image(self, array: np.ndarray) -> Image.Image:
        """A padded output canvas (values 0..255) -> the output image at the input's (transformed) size."""
        image = Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8))
        full_h, full_w = self.array.shape[:2]
        if (full_w, full_h) == (self.width, self.height):
            return image
        return image.crop(get_task(self.task).box((0, 0, self.width, self.height), full_w, full_h))


def tile_batch_size(model, memory_mb: int = TILE_MEMORY_MB) -> int:
    """Tiles generated together by default: as many as `memory_mb` of generation state holds (LM4LV: each row's KV
    cache, 5 MB for the embedded SmolLM2, about 250 MB for Llama-2-7B at 224 px), between 1 and MAX_TILE_BATCH.
    Larger batches read the LLM's weights once for more tiles (bench/tiling.py)."""
    per_row = model.generation_bytes_per_row
    fits = memory_mb * 2**20 // per_row if per_row else MAX_TILE_BATCH
    return int(max(1, min(MAX_TILE_BATCH, fits)))


def balanced_chunks(items: list, batch_size: int) -> list[list]:
    """As few batches of at most `batch_size` as hold `items`, their sizes differing by at most one. The same number of
    decoding loops as plain slicing, but evenly spaced progress and at most two batch shapes, so that a compiled LLM
    (`LM4LV.compile_llm`) compiles for one or two shapes instead of a new one for each photo's last batch."""
    if not items:
        return []
    count = -(-len(items) // batch_size)  # batches needed
    base, extra = divmod(len(items), count)
    bounds = [i * base + min(i, extra) for i in range(count + 1)]  # the first `extra` batches hold one more
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]


@torch.inference_mode()
def iter_restore_tiled(
    model,
    image: Image.Image,
    task: str,
    overlap: int = 16,
    batch_size: int | None = None,
    previews: bool = True,
    mae_r_only: bool = False,
    **generate_options,
):
    """Yield a `TileProgress` after each batch of tiles, then the `TiledResult`.

    The MAE-r of every tile is computed first, so previews show restored tiles over the MAE-r of the rest;
    `mae_r_only` stops there (the MAE-r baseline at full size). `batch_size`: tiles generated together (default:
    `tile_batch_size`)."""
    grid = TileGrid.of(image, task, model.image_size, overlap)
    chunks = balanced_chunks(grid.boxes, batch_size or tile_batch_size(model))
    vision, spec = model.vision, get_task(task)
    mae_r, weights, lq_all = grid.canvas().repeat(3, -1), grid.canvas(), []
    for chunk in chunks:  # MAE-r of all tiles first (cheap): the backdrop of previews
        lq_all.append(vision.encode(vision.preprocess(grid.tiles(chunk))))  # (b, N, D)
        grid.add(mae_r, weights, chunk, [spec.transform(r) for r in vision.postprocess(vision.decode(lq_all[-1]))])
    mae_r_image = grid.image(mae_r / weights)
    if mae_r_only:
        yield TiledResult(mae_r_image, mae_r_image, "", torch.cat(lq_all).cpu())
        return
    restored, done_weights, text, all_tokens = grid.canvas().repeat(3, -1), grid.canvas(), "", []
    for chunk, lq in zip(chunks, lq_all):
        finished = {
            e.row: e for e in model.events(lq, [task] * len(chunk), **generate_options) if isinstance(e, Finished)
        }
        tokens = torch.stack([finished[i].image_or(lq[i]) for i in range(len(chunk))])
        text = finished[0].text if not all_tokens else text  # the first tile's
        all_tokens.append(tokens.cpu())
        grid.add(restored, done_weights, chunk, vision.postprocess(vision.decode(tokens.to(lq.device))))
        preview = None
        if previews:  # restored where tiles are done, blended into the MAE-r elsewhere
            covered = np.minimum(done_weights / weights, 1.0)
            preview = grid.image(restored / np.maximum(done_weights, 1e-12) * covered + mae_r / weights * (1 - covered))
        yield TileProgress(sum(len(c) for c in chunks[: len(all_tokens)]), len(grid.boxes), preview)
    yield TiledResult(grid.image(restored / weights), mae_r_image, text, torch.cat(all_tokens))
