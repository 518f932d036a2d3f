"""MAE-r of clean images: how well a vision module reconstructs photos (the issue's 28 dB target).

    python -m train.evaluate_mae --vision checkpoints/mae-tiny [--vision runs/mae_ae/vision ...] \\
        [--images skimage] [--token-noise 0.05,0.1,0.2] [--json OUT.json]

Each image is center-cropped and resized to the module's input size (as in `train.evaluate`), encoded without
masking and decoded; PSNR/SSIM against the resized clean image, per image and averaged. Two properties of the
feature space that LM4LV's generated tokens meet, so that vision modules compare on them too: `--token-noise`, the
same PSNR with Gaussian noise on every token before decoding (sigma as a fraction of the tokens' RMS deviation from
their mean, so that modules of other feature scales compare), and the spectrum of the tokens' covariance (how far
the detail sits in weak directions).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from lm4lv_core.images import fit_square
from lm4lv_core.metrics import psnr, ssim
from lm4lv_core.vision import VisionModule
from train.data import load_eval_images


def reconstruction_scores(vision: VisionModule, images) -> dict:
    clean = [fit_square(image, vision.image_size)[0] for _, image in images]
    with torch.inference_mode():
        recon = vision.reconstruct(clean)
    per = {
        name: {"psnr": psnr(np.asarray(r), np.asarray(c)), "ssim": ssim(np.asarray(r), np.asarray(c))}
        for (name, _), r, c in zip(images, recon, clean)
    }
    return {
        "images": per,
        "psnr": float(np.mean([v["psnr"] for v in per.values()])),
        "ssim": float(np.mean([v["ssim"] for v in per.values()])),
    }


@torch.inference_mode()
def feature_scores(vision: VisionModule, images, sigmas: list[float], seed: int = 0) -> dict:
    """Token-noise tolerance and feature spectrum of `vision` on the clean images (see the module docstring)."""
    clean = [fit_square(image, vision.image_size)[0] for _, image in images]
    tokens = vision.encode(vision.preprocess(clean))  # (B, N, D)
    centred = (tokens - tokens.mean((0, 1))).flatten(0, 1).double()  # (B*N, D)
    rms = float(centred.pow(2).mean().sqrt())
    eigen = torch.linalg.eigvalsh(centred.T @ centred / len(centred)).flip(0).clamp_min(0)  # (D,) descending
    share = eigen.cumsum(0) / eigen.sum()
    generator = torch.Generator().manual_seed(seed)
    noisy_psnr = {}
    for sigma in sigmas:
        noise = torch.randn(tokens.shape, generator=generator).to(tokens) * sigma * rms
        recon = vision.postprocess(vision.decode(tokens + noise))
        noisy_psnr[str(sigma)] = float(np.mean([psnr(np.asarray(r), np.asarray(c)) for r, c in zip(recon, clean)]))
    return {
        "feature_rms": rms,
        "token_noise_psnr": noisy_psnr,
        "eigenvalue_ratio": {str(k): float(eigen[k - 1] / eigen[0]) for k in (10, 50, 100) if k <= len(eigen)},
        "directions_for_variance": {str(q): int((share < q).sum()) + 1 for q in (0.9, 0.99, 0.999)},
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", action="append", required=True, help="vision module folder or hub id (repeatable)")
    p.add_argument("--images", default="skimage", help="'skimage' (the five evaluation photos) or a folder")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument(
        "--token-noise",
        default="",
        metavar="SIGMAS",
        help="comma list of noise levels (fractions of the tokens' RMS deviation) for the token-noise "
        "PSNR; with it, the feature spectrum too",
    )
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    try:
        sigmas = [float(x) for x in args.token_noise.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--token-noise takes comma-separated numbers, not {args.token_noise!r}.") from None
    images = load_eval_images(args.images, args.limit)
    results = {}
    for source in args.vision:
        vision = VisionModule.from_pretrained(source).eval()
        scores = reconstruction_scores(vision, images)
        per = " ".join(f"{name} {v['psnr']:.2f}" for name, v in scores["images"].items())
        print(f"{source}: MAE-r of clean images {scores['psnr']:.2f} dB / SSIM {scores['ssim']:.3f} ({per})")
        if sigmas:
            scores.update(feature_scores(vision, images, sigmas))
            noisy = ", ".join(f"{k}: {v:.2f} dB" for k, v in scores["token_noise_psnr"].items())
            ratios = ", ".join(f"{k}th {v:.1e}" for k, v in scores["eigenvalue_ratio"].items())
            counts = ", ".join(f"{k}: {v}" for k, v in scores["directions_for_variance"].items())
            print(
                f"  token noise (x RMS {scores['feature_rms']:.3f}): {noisy}; eigenvalues / top: {ratios}; "
                f"directions for that share of variance: {counts}"
            )
        results[source] = scores
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
