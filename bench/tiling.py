"""Tiled restoration of large photos: seams and speed on this machine.

    python -m bench.tiling [--size 1024x768] [--batch-sizes 16,32] [--overlap 16] [--threads N]

Restores a clean photo (scikit-image's chelsea, resized to --size) with the denoise task-token set in tile mode and
reports the PSNR against the clean photo separately for pixels near interior tile borders (within the overlap) and for
tile centres, for LM4LV and for the tiled MAE-r. Seams would show as a border PSNR well below the centre PSNR. Then
times the whole restoration for each batch size (tiles generated together).
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from PIL import Image

from lm4lv_core import LM4LV
from lm4lv_core.tiling import tile_starts


def border_mask(width: int, height: int, tile: int, overlap: int) -> np.ndarray:
    """True for pixels within `overlap` px of an interior tile edge."""
    mask = np.zeros((height, width), bool)
    for starts, length, axis in (
        (tile_starts(width, tile, overlap), width, 1),
        (tile_starts(height, tile, overlap), height, 0),
    ):
        for s in starts:
            for edge in (s, s + tile):
                if 0 < edge < length:
                    lo, hi = max(0, edge - overlap), min(length, edge + overlap)
                    if axis == 1:
                        mask[:, lo:hi] = True
                    else:
                        mask[lo:hi, :] = True
    return mask


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64))[mask] ** 2)
    return float(10 * np.log10(255**2 / mse))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1024x768")
    p.add_argument("--batch-sizes", default="16,32")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpoint", default=None)
    p.add_argument(
        "--compile",
        action="store_true",
        help="the LLM under torch.compile (LM4LV.compile_llm); the first batch size's time then includes compiling",
    )
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from skimage import data

    width, height = (int(v) for v in args.size.split("x"))
    clean = Image.fromarray(data.chelsea()).resize((width, height), Image.Resampling.LANCZOS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = LM4LV.from_pretrained(args.checkpoint)
    if args.compile:
        model.compile_llm()
    tile = model.image_size
    mask = border_mask(width, height, tile, args.overlap)
    ref = np.asarray(clean)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, LLM {model.llm_dtype}, "
        f"{width}x{height}, tile {tile}, overlap {args.overlap}, trained={model.trained}, compiled={args.compile}"
    )
    mae_r = np.asarray(model.reconstruct(clean, "tile", overlap=args.overlap))
    print(
        f"MAE-r  PSNR: tile borders {masked_psnr(mae_r, ref, mask):.2f} dB, "
        f"tile centres {masked_psnr(mae_r, ref, ~mask):.2f} dB"
    )
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        began = time.perf_counter()
        counted = {}
        result = model.restore(
            clean,
            "denoise",
            mode="tile",
            overlap=args.overlap,
            batch_size=batch,
            progress=lambda done, total, counted=counted: counted.update(total=total),
        )
        seconds = time.perf_counter() - began
        out = np.asarray(result.image)
        print(
            f"LM4LV  PSNR: tile borders {masked_psnr(out, ref, mask):.2f} dB, tile centres "
            f"{masked_psnr(out, ref, ~mask):.2f} dB | {counted['total']} tiles, batch {batch}: {seconds:.1f} s "
            f"({seconds / counted['total'] * 1000:.0f} ms per tile)",
            flush=True,
        )


if __name__ == "__main__":
    main()
