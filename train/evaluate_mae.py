"""MAE-r of clean images: how well a vision module reconstructs photos (the issue's 28 dB target).

    python -m train.evaluate_mae --vision checkpoints/mae-tiny [--vision runs/mae_ae/vision ...] \\
        [--images skimage] [--json OUT.json]

Each image is center-cropped and resized to the module's input size (as in `train.evaluate`), encoded without
masking and decoded; PSNR/SSIM against the resized clean image, per image and averaged.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from lm4lv_core.images import fit_square
from lm4lv_core.metrics import psnr, ssim
from lm4lv_core.vision import VisionModule
from train.evaluate import load_eval_images


def reconstruction_scores(vision: VisionModule, images) -> dict:
    clean = [fit_square(image, vision.image_size)[0] for _, image in images]
    with torch.inference_mode():
        recon = vision.reconstruct(clean)
    per = {name: {"psnr": psnr(np.asarray(r), np.asarray(c)), "ssim": ssim(np.asarray(r), np.asarray(c))}
           for (name, _), r, c in zip(images, recon, clean)}
    return {"images": per, "psnr": float(np.mean([v["psnr"] for v in per.values()])),
            "ssim": float(np.mean([v["ssim"] for v in per.values()]))}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", action="append", required=True, help="vision module folder or hub id (repeatable)")
    p.add_argument("--images", default="skimage", help="'skimage' (the five evaluation photos) or a folder")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    images = load_eval_images(args.images, args.limit)
    results = {}
    for source in args.vision:
        scores = reconstruction_scores(VisionModule.from_pretrained(source).eval(), images)
        results[source] = scores
        per = " ".join(f"{name} {v['psnr']:.2f}" for name, v in scores["images"].items())
        print(f"{source}: MAE-r of clean images {scores['psnr']:.2f} dB / SSIM {scores['ssim']:.3f} ({per})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
