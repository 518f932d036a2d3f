"""Training throughput of `train_lm4lv` at the shipped recipe on this machine, and where a step's time goes.

    python -m bench.training_speed [--batch-size 8] [--self-condition 0.5] [--pixel-loss 1] [--steps 6] [--threads 2]

Replays the training step of `train.train_lm4lv` (the embedded LLM and vision module, the training corpus) and times
its parts: building the batch (crops, degradations, MAE encoding), the forward pass (with the self-conditioning pass
inside it: `LM4LV.forward_loss` shares the user turn between both), the pixel loss through the frozen MAE decoder,
the backward pass and the optimizer step. The first step is a warm-up and is not counted.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from lm4lv_core.attention import training_attention
from lm4lv_core.tasks import TASKS
from lm4lv_core.variants import build_model
from train.data import RandomCrops, make_pairs
from train.objectives import fed_options, pixel_loss

PARTS = ("data", "forward", "pixel_loss", "backward", "optimizer")


def timed_step(
    model,
    crops,
    optimizer,
    step: int,
    batch_size: int,
    self_condition: float,
    pixel_weight: float,
    degradations: str = "numpy",
) -> dict[str, float]:
    """One training step as `train_lm4lv` takes it; seconds per part."""
    marks = [time.perf_counter()]
    lq, hq, names = make_pairs(crops, model.vision, step, batch_size, list(TASKS), 0, degradations=degradations)
    marks.append(time.perf_counter())
    terms = model(lq, hq, names, **fed_options(model, lq, hq, names, self_condition, "predicted", 0.0))
    marks.append(time.perf_counter())
    if pixel_weight > 0:
        terms["loss"] = terms["loss"] + pixel_weight * pixel_loss(model.vision, terms["pred"], hq)
    marks.append(time.perf_counter())
    terms["loss"].backward()
    marks.append(time.perf_counter())
    torch.nn.utils.clip_grad_norm_(model.trainable.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    marks.append(time.perf_counter())
    return {part: b - a for part, a, b in zip(PARTS, marks, marks[1:])}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", default="checkpoints/mae-tiny")
    p.add_argument("--data", default="../shared/corpus/train")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--self-condition", type=float, default=0.5)
    p.add_argument("--pixel-loss", type=float, default=1.0, help="weight of the pixel loss (0: off)")
    p.add_argument("--steps", type=int, default=6, help="timed steps (after one warm-up step)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--attention",
        choices=["auto", "eager", "sdpa"],
        default="auto",
        help="the LLM's attention kernel (auto: as train_lm4lv, eager on the CPU)",
    )
    p.add_argument(
        "--degradations",
        choices=["numpy", "torch"],
        default="numpy",
        help="how the batch is degraded (train_lm4lv --degradations)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model("lm4lv", vision=args.vision, tasks=TASKS, device="cpu")
    model.llm.set_attn_implementation(training_attention("cpu", args.attention))
    crops = RandomCrops(args.data, model.image_size, seed=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, betas=(0.9, 0.95))
    model.train()
    options = (args.batch_size, args.self_condition, args.pixel_loss, args.degradations)
    timed_step(model, crops, optimizer, 0, *options)  # warm-up
    rows = [timed_step(model, crops, optimizer, s, *options) for s in range(1, args.steps + 1)]
    mean = {part: sum(r[part] for r in rows) / len(rows) for part in PARTS}
    total = sum(mean.values())
    print(
        f"batch {args.batch_size}, {args.degradations} degradations, self-condition {args.self_condition}, "
        f"pixel loss {args.pixel_loss}, "
        f"{args.threads} threads, {model.llm.config._attn_implementation} attention, "
        f"LLM dtype {model.llm_dtype}: {total:.2f} s per step, {args.batch_size / total:.2f} samples/s"
    )
    for part in PARTS:
        print(f"  {part:15s} {mean[part] * 1000:8.0f} ms  {100 * mean[part] / total:5.1f}%")


if __name__ == "__main__":
    main()
