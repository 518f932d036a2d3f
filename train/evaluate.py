"""Evaluate a checkpoint the way the paper does (Table 2): degraded input, MAE-r and LM4LV against the reference.

    python -m train.evaluate --images skimage --tasks all --json runs/eval.json \\
        [--checkpoint DIR] [--limit N] [--seed S] [--size PX] [--strength random|fixed] \\
        [--grid docs/results.png] [--markdown docs/RESULTS.md] [--examples DIR]

`--images skimage` uses the scikit-image photos astronaut, chelsea, coffee, rocket and motorcycle_left (kept out of
the training corpus); otherwise a folder (recursive). Each image is center-cropped to a square and resized to
`--size` (default: the model's input size), degraded with a fixed seed per (image, task), and scored with PSNR/SSIM.
For rotate and flip the reference is the rotated/flipped clean image and MAE-r is the reconstruction of that image.
Autoregressive models start their answer with `<Img>` (forced), so the table measures the generated image.
The checkpoint may be any `--variant` of `train.train_lm4lv` (the paper's controls); its scores stay under the key
"lm4lv" (the model under test) and the JSON records the variant and the run's `training.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from PIL import Image

from lm4lv_core.degrade import degrade, target
from lm4lv_core.images import fit_square
from lm4lv_core.metrics import psnr, ssim
from lm4lv_core.tasks import TASKS, restoration_tasks
from train.data import degradation_seed, load_eval_images
from train.probe import baseline_input


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="'skimage' or a folder of clean images")
    p.add_argument("--tasks", default="all", help="comma-separated tasks or 'all'")
    p.add_argument("--json", required=True, help="where to write the scores")
    p.add_argument("--checkpoint", default=None, help="LM4LV checkpoint (default: the shipped embedded default)")
    p.add_argument("--llm", default=None, help="override the checkpoint's LLM")
    p.add_argument("--limit", type=int, default=None, help="use at most N images")
    p.add_argument("--seed", type=int, default=0, help="base seed of the degradations")
    p.add_argument("--size", type=int, default=None, help="evaluation size in pixels (default: the model's)")
    p.add_argument(
        "--strength",
        choices=["random", "fixed"],
        default="random",
        help="the paper's random strengths (seeded) or the fixed evaluation strengths",
    )
    p.add_argument("--batch-size", type=int, default=8, help="images generated together")
    p.add_argument("--grid", default=None, help="PNG with one row per task: degraded / MAE-r / LM4LV / clean")
    p.add_argument("--markdown", default=None, help="also write the table as Markdown to this file")
    p.add_argument(
        "--examples",
        default=None,
        help="folder for the first image's PNGs per task (degraded, mae_r, output, clean), for grids",
    )
    return p.parse_args(argv)


def evaluate(model, images, tasks, seed=0, size=None, strength="random", batch_size=8):
    """-> (scores {task: {"degraded"|"mae_r"|"lm4lv": {"psnr", "ssim"}}}, examples {task: [4 images of image 0]})."""
    size = size or model.image_size
    clean = [fit_square(im, size)[0] for _, im in images]
    scores, examples = {}, {}
    for task in tasks:
        inputs = [
            degrade(c, task, seed=degradation_seed(seed, i, task), strength="fixed" if strength == "fixed" else None)
            for i, c in enumerate(clean)
        ]
        refs = [target(c, task) for c in clean]
        outputs, baselines = [], []
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            outputs += [r.image for r in model.restore_batch(chunk, task, mode="resize", force_image_after=0)]
            baselines += model.vision.reconstruct(
                [baseline_input(task, d, r) for d, r in zip(chunk, refs[start : start + batch_size])]
            )
        per = {"degraded": [], "mae_r": [], "lm4lv": []}
        for d, b, o, r in zip(inputs, baselines, outputs, refs):
            ref = np.asarray(r)
            for name, image in (("degraded", d), ("mae_r", b), ("lm4lv", o)):
                image = image if image.size == r.size else image.resize(r.size, Image.Resampling.BICUBIC)
                per[name].append((psnr(np.asarray(image), ref), ssim(np.asarray(image), ref)))
        scores[task] = {
            name: {"psnr": float(np.mean([min(p, 100.0) for p, _ in v])), "ssim": float(np.mean([s for _, s in v]))}
            for name, v in per.items()
        }
        examples[task] = [inputs[0], baselines[0], outputs[0], refs[0]]
    return scores, examples


def table(scores: dict) -> str:
    lines = [
        "| Task | Degraded PSNR / SSIM | MAE-r PSNR / SSIM | LM4LV PSNR / SSIM | Delta PSNR (LM4LV - MAE-r) |",
        "|---|---|---|---|---|",
    ]
    for task, s in scores.items():
        cells = [f"{s[k]['psnr']:.2f} / {s[k]['ssim']:.3f}" for k in ("degraded", "mae_r", "lm4lv")]
        lines.append(f"| {task} | {' | '.join(cells)} | {s['lm4lv']['psnr'] - s['mae_r']['psnr']:+.2f} |")
    return "\n".join(lines)


def save_grid(examples: dict, path: str, scale: int = 3) -> None:
    from PIL import ImageDraw

    rows = list(examples.items())
    w, h = (d * scale for d in rows[0][1][0].size)
    pad, label_w, head = 6, 80, 20
    canvas = Image.new("RGB", (label_w + 4 * (w + pad), head + len(rows) * (h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(("degraded", "MAE-r", "LM4LV", "clean")):
        draw.text((label_w + c * (w + pad) + 4, 4), name, fill="black")
    for r, (task, images) in enumerate(rows):
        y = head + r * (h + pad)
        draw.text((4, y + h // 2 - 6), task, fill="black")
        for c, image in enumerate(images):
            canvas.paste(image.resize((w, h), Image.Resampling.NEAREST), (label_w + c * (w + pad), y))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)


def save_examples(examples: dict, folder: str) -> None:
    """folder/{task}_{degraded,mae_r,output,clean}.png for the first image."""
    os.makedirs(folder, exist_ok=True)
    for task, images in examples.items():
        for name, image in zip(("degraded", "mae_r", "output", "clean"), images):
            image.save(os.path.join(folder, f"{task}_{name}.png"))


def training_record(checkpoint: str | None) -> dict | None:
    """The `training.json` that `train.train_lm4lv` writes next to a checkpoint, or else the `merge.json` that
    `train.merge_tasks` writes (its base, each task's part and the parts' training records), if any."""
    from lm4lv_core.checkpoint import DEFAULT_CHECKPOINT
    from train.engine import read_record

    return read_record(str(checkpoint or DEFAULT_CHECKPOINT), ("training.json", "merge.json"))


def main(argv=None):
    args = parse_args(argv)
    from lm4lv_core.variants import load_model

    tasks = list(TASKS) if args.tasks == "all" else [t.strip() for t in args.tasks.split(",")]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        model = load_model(args.checkpoint, llm=args.llm)
    images = load_eval_images(args.images, args.limit)
    began = time.time()
    scores, examples = evaluate(model, images, tasks, args.seed, args.size, args.strength, args.batch_size)
    result = {
        "checkpoint": args.checkpoint or "embedded default",
        "variant": model.variant,
        "llm_frozen": model.llm_frozen,
        "trainable_params": model.trainable_parameters(),
        "training": training_record(args.checkpoint),
        "trained": model.trained,
        "images": len(images),
        "image_names": [n for n, _ in images],
        "size": args.size or model.image_size,
        "seed": args.seed,
        "strength": args.strength,
        "seconds": round(time.time() - began, 1),
        "tasks": scores,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(table(scores))
    restoration = restoration_tasks(scores)
    if restoration:
        mean = np.mean([scores[t]["lm4lv"]["psnr"] - scores[t]["mae_r"]["psnr"] for t in restoration])
        print(f"mean Delta PSNR over restoration tasks: {mean:+.2f} dB")
    if args.grid:
        save_grid(examples, args.grid)
    if args.examples:
        save_examples(examples, args.examples)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table(scores) + "\n")


if __name__ == "__main__":
    main()
