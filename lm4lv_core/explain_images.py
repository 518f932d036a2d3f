"""Pictures of what the LLM copied and where the output is wrong: the focus of one token, the whole copy map, the
error maps, and the per-token PSNR. Inputs are model-size PIL images and a `explain.CopyMap`."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from .explain import CopyMap
from .metrics import psnr

PANEL = 256  # side of one panel, pixels
HEAT = np.array([[0, 0, 0], [120, 0, 160], [230, 60, 40], [255, 200, 0], [255, 255, 230]], dtype=np.float64)


def colour_scale(values: np.ndarray) -> np.ndarray:
    """(...,) values in [0, 1] -> (..., 3) uint8, black through purple, red and yellow to white."""
    x = np.clip(values, 0, 1) * (len(HEAT) - 1)
    low = np.floor(x).astype(int).clip(0, len(HEAT) - 2)
    frac = (x - low)[..., None]
    return (HEAT[low] * (1 - frac) + HEAT[low + 1] * frac).astype(np.uint8)


def _panel(image: Image.Image) -> Image.Image:
    return image.convert("RGB").resize((PANEL, PANEL), Image.Resampling.NEAREST)


def labelled_row(panels: list[Image.Image], labels: list[str], below: bool = True) -> Image.Image:
    """Panels of one size side by side, 8 px apart, each label in a 22 px strip under its panel (the demo's component
    labels cover the top) or, `below=False`, above it."""
    w, h = panels[0].size
    canvas = Image.new("RGB", (len(panels) * (w + 8) - 8, h + 22), "white")
    draw = ImageDraw.Draw(canvas)
    top, text_y = (0, h + 5) if below else (22, 4)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        canvas.paste(panel, (i * (w + 8), top))
        draw.text((i * (w + 8) + 4, text_y), label, fill="black")
    return canvas


def _patch_box(token: int, grid: int) -> tuple[int, int, int, int] | None:
    """The panel box of visual token `token` (0: the CLS token, which has none)."""
    if token == 0:
        return None
    row, col = divmod(token - 1, grid)
    side = PANEL / grid
    return (round(col * side), round(row * side), round((col + 1) * side) - 1, round((row + 1) * side) - 1)


def focus_image(lq_image: Image.Image, output: Image.Image, copy: CopyMap) -> Image.Image:
    """The last generated token's attention (through the copying heads) as a heat map on the LQ image, its top
    source boxed, beside the output so far with the patch being written boxed."""
    weights = copy.weights[-1].numpy()  # (N,)
    grid = int(round((len(weights) - 1) ** 0.5))
    heat = weights[1:].reshape(grid, grid) / max(float(weights.max()), 1e-6)  # (grid, grid) in [0, 1]
    tint = colour_scale(heat).astype(np.float64) * heat[..., None] * 0.9  # (grid, grid, 3), per patch
    tint = np.asarray(Image.fromarray(tint.astype(np.uint8)).resize((PANEL, PANEL), Image.Resampling.NEAREST))
    left = Image.fromarray((np.asarray(_panel(lq_image), dtype=np.float64) * 0.45 + tint).clip(0, 255).astype(np.uint8))
    right = _panel(output)
    token, source = len(copy.weights) - 1, int(copy.sources[-1])
    for panel, box in ((left, _patch_box(source, grid)), (right, _patch_box(token, grid))):
        if box is not None:
            ImageDraw.Draw(panel).rectangle(box, outline="cyan", width=2)
    where = "the CLS token" if source == 0 else f"token {source}"
    return labelled_row([left, right], [f"read from {where} ({float(copy.mass[-1]):.2f})", f"writing token {token}"])


def position_colours(grid: int) -> np.ndarray:
    """(grid * grid + 1, 3) a colour per LQ token coding its place (CLS: grey): red grows to the right, green
    downwards."""
    rows, cols = np.divmod(np.arange(grid * grid), grid)
    span = max(grid - 1, 1)
    patches = np.stack([cols / span, rows / span, 1 - (rows + cols) / (2 * span)], -1) * 255
    return np.concatenate([[[128, 128, 128]], patches]).astype(np.float64)


def copy_map_image(copy: CopyMap, expected: np.ndarray) -> Image.Image:
    """For each output patch, the colour of the place its attention went (brightness: the mass), beside the same
    for the sources the task calls for (`expected`, (N,)): equal panels mean the LLM copies the right tokens."""
    count = len(expected)
    grid = int(round((count - 1) ** 0.5))
    colours = position_colours(grid)  # (N, 3)
    sources = np.zeros(count, dtype=np.int64)
    mass = np.zeros(count)
    sources[: len(copy.sources)] = copy.sources.numpy()
    mass[: len(copy.mass)] = copy.mass.numpy()
    read = (colours[sources] * mass[:, None])[1:].reshape(grid, grid, 3)
    wanted = colours[expected][1:].reshape(grid, grid, 3)
    panels = [_panel(Image.fromarray(x.astype(np.uint8))) for x in (read, wanted)]
    agreement = copy.agreement(torch.as_tensor(expected))
    return labelled_row(
        panels, [f"read from (layer {copy.layer}, heads {copy.heads})", f"the task's sources ({agreement:.0%} agree)"]
    )


def error_maps(restored: Image.Image, mae_r: Image.Image, reference: Image.Image) -> Image.Image:
    """|LM4LV - clean| and |MAE-r - clean| per pixel (mean over colours), on one colour scale (white: the larger
    of the two maxima)."""
    ref = np.asarray(reference.convert("RGB"), dtype=np.float64)
    errors = [np.abs(np.asarray(im.convert("RGB"), dtype=np.float64) - ref).mean(-1) for im in (restored, mae_r)]
    top = max(max(float(e.max()) for e in errors), 1.0)
    panels = [_panel(Image.fromarray(colour_scale(e / top))) for e in errors]
    return labelled_row(panels, [f"|LM4LV - clean| (white = {top:.0f} levels)", "|MAE-r - clean| (same scale)"])


PSNR_CAP = 99.0  # dB reported for a patch equal to the reference (JSON has no infinity)


def token_psnr(image: Image.Image, reference: Image.Image, grid: int) -> list[float]:
    """The PSNR (dB, at most PSNR_CAP) of each of grid x grid patches (raster order: the visual tokens after the CLS
    token)."""
    a, b = np.asarray(image.convert("RGB")), np.asarray(reference.convert("RGB"))
    side = a.shape[0] // grid
    return [
        round(
            min(
                psnr(
                    a[r * side : (r + 1) * side, c * side : (c + 1) * side],
                    b[r * side : (r + 1) * side, c * side : (c + 1) * side],
                ),
                PSNR_CAP,
            ),
            3,
        )
        for r in range(grid)
        for c in range(grid)
    ]
