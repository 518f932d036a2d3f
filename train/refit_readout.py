"""Refit LM4LV's `adapter_out` in closed form on the hidden states it meets when generating.

Training fits the readout on teacher-forced (or partly self-conditioned) inputs; free running feeds back the model's
own tokens, and the readout lags its least-squares optimum there. This refits it by ridge regression on the hidden
states of `--inputs free` (the generated tokens fed back: exactly free running's hidden states), `self` (one pass of
the model's teacher-forced predictions) or `teacher`; `--rounds` repeats the fit on the refitted model's own outputs.
`--task-readouts` gives each task its own adapter_out (a checkpoint with one shared readout is split into copies
first), each fitted on `--batches` batches of its own task; a checkpoint that already has them is refitted so.

    python -m train.refit_readout --checkpoint checkpoints/lm4lv-smollm2 --out runs/refit --inputs free --batches 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

import torch
from tqdm import tqdm

from lm4lv_core.device import dtype_name
from train.data import RandomCrops, make_pairs, parse_tasks
from train.engine import load_autoregressive, save_next_to
from train.least_squares import ReadoutFit
from train.objectives import fed_tokens

INPUTS = ("free", "self", "teacher")
FIRST_BATCH = 2 * 10**9  # batch indices far from any training step and from train_lm4lv's initialisation batches


@torch.no_grad()
def refit_readout(model, batches, inputs: str = "free", ridge: float = 1e-2, progress: str | None = None) -> float:
    """Ridge fit of adapter_out (each task's, if per task) on the hidden states of `inputs`; returns the fit's MSE
    (in the space it writes). `progress`: a progress bar's label (None: no bar)."""
    fit = ReadoutFit()
    for lq, hq, names in tqdm(batches, desc=progress, unit="batch", disable=progress is None):
        fit.add(model.readout(lq, hq, names, fed=fed_tokens(model, lq, hq, names, inputs)))
    return fit.fit(ridge)


def fitting_batches(model, args, tasks: list[str]) -> list:
    """`--batches` batches of crops with tasks drawn from `tasks` (a shared readout), or that many of each task
    (per-task readouts: each fitted on its own task's samples)."""
    crops = RandomCrops(args.data, model.image_size, seed=args.seed + 2)
    groups = [[t] for t in tasks] if model.heads.config.task_readouts else [tasks]
    return [
        make_pairs(crops, model.vision, FIRST_BATCH + i, args.batch_size, group, args.seed)
        for group in groups
        for i in range(args.batches)
    ]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="trained LM4LV checkpoint folder")
    p.add_argument("--out", required=True, help="where to write the refitted checkpoint")
    p.add_argument("--data", default="../shared/corpus/train", help="folder of training images")
    p.add_argument("--tasks", default=None, help="tasks to fit on (default: the checkpoint's)")
    p.add_argument("--inputs", choices=INPUTS, default="free", help="which hidden states the readout is fitted on")
    p.add_argument(
        "--batches", type=int, default=8, help="batches of --batch-size crops (per task with per-task readouts)"
    )
    p.add_argument(
        "--task-readouts",
        action="store_true",
        help="one adapter_out per task (a shared one is split into copies first), each fitted on its own "
        "task's samples",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--ridge", type=float, default=1e-2, help="ridge, relative to the sample count")
    p.add_argument("--rounds", type=int, default=1, help="fits, each on the outputs of the previous one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    model = load_autoregressive(args.checkpoint, args.threads, "the refit of adapter_out")
    tasks = parse_tasks(args.tasks) if args.tasks else list(model.tasks)
    if args.task_readouts:
        model.heads.split_readout()
    batches = fitting_batches(model, args, tasks)
    fits = [
        refit_readout(model, batches, args.inputs, args.ridge, progress=f"round {r + 1} of {args.rounds}")
        for r in range(args.rounds)
    ]
    print("refit MSE per round: " + ", ".join(f"{f:.4f}" for f in fits))
    save_next_to(model, args.checkpoint, args.out)
    record = os.path.join(args.checkpoint, "training.json")
    if os.path.isfile(record) and os.path.abspath(args.checkpoint) != os.path.abspath(args.out):
        shutil.copy(record, os.path.join(args.out, "training.json"))
    with open(os.path.join(args.out, "refit.json"), "w") as f:
        json.dump(
            {
                "from": args.checkpoint,
                "inputs": args.inputs,
                "tasks": tasks,
                "samples": len(batches) * args.batch_size,
                "task_readouts": model.heads.config.task_readouts,
                "ridge": args.ridge,
                "rounds": args.rounds,
                "fit_mse": fits,
                "llm_dtype": dtype_name(model.llm.dtype),
            },
            f,
            indent=2,
        )
    print(f"refitted checkpoint in {args.out}")


if __name__ == "__main__":
    main()
