"""Adapter analysis (paper, appendix B.1): is adapter_out @ adapter_in close to a scaled identity?

    python -m train.analyze_adapters [--checkpoint DIR] [--json OUT] [--heatmap PNG]

For A = W_out W_in (vision_dim x vision_dim):
- L(A) = min_alpha ||A - alpha I||_F^2 / ||A||_F^2 (alpha* = tr(A) / d): 0 for a scaled identity, about 1 for a
  matrix unrelated to the identity;
- D(A) = mean |A_ii| / mean |A_ij| (i != j): large when the diagonal dominates.
The same figures are printed for a random Gaussian matrix of the same size (the reference point).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
from safetensors.numpy import load_file

from lm4lv_core.checkpoint import CONFIG_FILE, DEFAULT_CHECKPOINT, HEADS_FILE


def identity_distance(a: np.ndarray) -> tuple[float, float]:
    """(L(A), alpha*)."""
    d = a.shape[0]
    alpha = float(np.trace(a) / d)
    return float(np.sum((a - alpha * np.eye(d)) ** 2) / np.sum(a**2)), alpha


def diagonal_dominance(a: np.ndarray) -> float:
    off = ~np.eye(a.shape[0], dtype=bool)
    off_mean = np.mean(np.abs(a[off]))
    return float("inf") if off_mean == 0 else float(np.mean(np.abs(np.diag(a))) / off_mean)


def analyze(a: np.ndarray) -> dict:
    loss, alpha = identity_distance(a)
    return {"L": loss, "alpha": alpha, "D": diagonal_dominance(a)}


def save_heatmap(a: np.ndarray, path: str) -> None:
    """Diverging blue-white-red image of A (symmetric colour range), 3 px per entry."""
    from PIL import Image

    limit = np.percentile(np.abs(a), 99) or 1.0
    x = np.clip(a / limit, -1, 1)
    rgb = np.stack([1 - np.clip(-x, 0, 1), 1 - np.abs(x), 1 - np.clip(x, 0, 1)], -1)  # red +, blue -
    image = Image.fromarray((rgb * 255).astype(np.uint8)).resize((a.shape[1] * 3, a.shape[0] * 3), Image.NEAREST)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    image.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--json", default=None)
    p.add_argument("--heatmap", default=None, help="PNG of the adapter product")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.checkpoint, CONFIG_FILE)):
        raise SystemExit(f"{args.checkpoint} is not an LM4LV checkpoint.")
    heads = load_file(os.path.join(args.checkpoint, HEADS_FILE))
    product = heads["adapter_out.weight"].astype(np.float64) @ heads["adapter_in.weight"].astype(np.float64)
    random = np.random.default_rng(args.seed).normal(size=product.shape)
    result = {"checkpoint": args.checkpoint, "shape": list(product.shape), "adapters": analyze(product),
              "random_gaussian": analyze(random)}
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.heatmap:
        save_heatmap(product, args.heatmap)


if __name__ == "__main__":
    main()
