"""Does a checkpoint move the image for rotate / flip, or copy it in place? (session 26; a record, see the index)

For each checkpoint and spatial task, on the skimage photos of Table 2 (same degradation seeds: none for these
tasks), prints the free-running output's PSNR against the reference (the moved image: Table 2's figure) and against
the input left where it is, and the share of 8 px patches whose output lies nearer the moved patch than the unmoved
one (1.0: moved everywhere; 0.0: a copy in place), the output's mean-colour error (RMS over photos and channels, of
0-255 values) and, as a floor, the PSNR of each reference's own mean colour (an image of one colour: no structure).

    LM4LV_DTYPE=fp32 python research/levers/spatial/in_place.py CKPT [CKPT ...] [--tasks rotate,flip]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from lm4lv_core.degrade import degrade, target
from lm4lv_core.images import fit_square
from lm4lv_core.metrics import psnr
from lm4lv_core.variants import load_model
from train.data import degradation_seed, load_eval_images


def patch_errors(a: np.ndarray, b: np.ndarray, p: int = 8) -> np.ndarray:
    """(H, W, 3) uint8 pair -> (H/p * W/p,) mean squared error per p x p patch."""
    d = (a.astype(np.float64) - b.astype(np.float64)) ** 2
    h, w = d.shape[0] // p, d.shape[1] // p
    return d[: h * p, : w * p].reshape(h, p, w, p, 3).mean(axis=(1, 3, 4)).ravel()


def measure(model, clean: list, task: str) -> dict:
    """Mean PSNR against the moved and the unmoved image, and the moved-patch share, over the photos."""
    inputs = [degrade(c, task, seed=degradation_seed(0, i, task)) for i, c in enumerate(clean)]
    outputs = [r.image for r in model.restore_batch(inputs, task, mode="resize", force_image_after=0)]
    moved, unmoved, share, colour, flat = [], [], [], [], []
    for x, o, c in zip(inputs, outputs, clean):
        ref, x, o = np.asarray(target(c, task)), np.asarray(x), np.asarray(o)
        moved.append(psnr(o, ref))
        unmoved.append(psnr(o, x))
        share.append(float(np.mean(patch_errors(o, ref) < patch_errors(o, x))))
        mean = ref.reshape(-1, 3).mean(0)  # (3,) the reference's mean colour
        colour.append((o.reshape(-1, 3).mean(0) - mean) ** 2)
        flat.append(psnr(np.broadcast_to(mean.round().astype(np.uint8), ref.shape), ref))
    return {
        "vs_moved": np.mean(moved),
        "vs_in_place": np.mean(unmoved),
        "moved_share": np.mean(share),
        "mean_colour_rms_error": np.sqrt(np.mean(colour)),
        "mean_colour_image_vs_moved": np.mean(flat),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--tasks", default="rotate,flip")
    args = p.parse_args()
    results = {}
    for path in args.checkpoints:
        model = load_model(path)
        clean = [fit_square(im, model.image_size)[0] for _, im in load_eval_images("skimage", None)]
        for task in args.tasks.split(","):
            r = {k: round(float(v), 3) for k, v in measure(model, clean, task).items()}
            results[f"{path} {task}"] = r
            print(f"{path} {task}: {r}", flush=True)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
