"""Adapter analysis (paper, appendix B.1): is adapter_out @ adapter_in close to a scaled identity?

    python -m train.analyze_adapters [--checkpoint DIR] [--json OUT] [--heatmap PNG]

For A = W_out W_in (vision_dim x vision_dim):
- L(A) = min_alpha ||A - alpha I||_F^2 / ||A||_F^2 (alpha* = tr(A) / d): 0 for a scaled identity, about 1 for a
  matrix unrelated to the identity;
- D(A) = mean |A_ii| / mean |A_ij| (i != j): large when the diagonal dominates.
The same figures are printed for a random Gaussian matrix of the same size (the reference point). A checkpoint with
one adapter_out per task is analysed with each task's (`per_task`); `adapters` and the heat map use `--task`'s
(default: the first).
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


def adapter_weights(heads: dict[str, np.ndarray], adapter: str) -> dict[str, np.ndarray]:
    """`adapter`'s ("adapter_in" or "adapter_out") weight per task ({"shared": W} when one serves every task)."""
    if f"{adapter}.weight" in heads:
        return {"shared": heads[f"{adapter}.weight"]}
    return {k.split(".")[1]: v for k, v in heads.items() if k.startswith(f"{adapter}.") and k.endswith(".weight")}


def adapter_products(heads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """adapter_out @ adapter_in (vision dim x vision dim) per task, or {"shared": A} when both adapters are shared."""
    w_in, w_out = adapter_weights(heads, "adapter_in"), adapter_weights(heads, "adapter_out")
    tasks = [t for t in {**w_out, **w_in} if t != "shared"] or ["shared"]
    return {
        t: w_out.get(t, w_out.get("shared")).astype(np.float64) @ w_in.get(t, w_in.get("shared")).astype(np.float64)
        for t in tasks
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    p.add_argument("--json", default=None)
    p.add_argument("--heatmap", default=None, help="PNG of the adapter product")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--task", default=None, help="with per-task adapters: the task whose product the heat map shows")
    args = p.parse_args(argv)
    if not os.path.isfile(os.path.join(args.checkpoint, CONFIG_FILE)):
        raise SystemExit(f"{args.checkpoint} is not an LM4LV checkpoint.")
    heads = load_file(os.path.join(args.checkpoint, HEADS_FILE))
    products = adapter_products(heads)
    task = args.task or next(iter(products))
    if task not in products:
        raise SystemExit(f"{args.checkpoint} has no adapter_out for {task!r}; it has: {', '.join(products)}.")
    product = products[task]
    random = np.random.default_rng(args.seed).normal(size=product.shape)
    result = {
        "checkpoint": args.checkpoint,
        "shape": list(product.shape),
        "adapters": analyze(product),
        "random_gaussian": analyze(random),
    }
    if len(products) > 1:
        result.update(readout=task, per_task={t: analyze(a) for t, a in products.items()})
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    if args.heatmap:
        save_heatmap(product, args.heatmap)


if __name__ == "__main__":
    main()
