"""Train LM4LV's adapters and task tokens with the LLM and the vision module frozen.

One run trains all tasks together (one adapter pair, one task-token set per task, tasks sampled uniformly per
example); `--tasks denoise` trains a single-task model as in the paper, `--tasks repeat` the sanity check.
`--variant` trains one of the paper's controls on the same data, seeds and budget (see `lm4lv_core.variants`):
lm4lv (default), lm4lv-lora (--lora-rank R: the LLM is then NOT frozen), random-llm, vit-llm, single-layer (--layer K),
linear, mlp, transformer.

    python -m train.train_lm4lv --vision checkpoints/mae-tiny --data ../shared/corpus/train --out runs/lm4lv \\
        --export-to checkpoints/lm4lv-smollm2
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os

import torch

from lm4lv_core.attention import training_attention
from lm4lv_core.device import dtype_name
from lm4lv_core.heads import Interface
from lm4lv_core.variants import AUTOREGRESSIVE_VARIANTS, VARIANTS, build_model
from train.data import RandomCrops, make_pairs, parse_tasks
from train.engine import add_common_args, append_row, make_accelerator, train_loop, will_resume
from train.least_squares import ReadoutFit
from train.objectives import fed_options, pixel_loss
from train.probe import FreeRunningProbe

STATISTICS_BATCHES = 4  # batches of (LQ, HQ) tokens behind the whitening basis of --whiten


def int_list(text: str) -> list[int]:
    """ "17,18" -> [17, 18] (an argparse type)."""
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give whole numbers separated by commas, e.g. 17,18") from None


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The model: variant, LLM, vision module, tasks."""
    p.add_argument("--vision", required=True, help="the trained ViT-MAE (folder or hub id)")
    p.add_argument(
        "--variant",
        choices=VARIANTS,
        default="lm4lv",
        help="the model (lm4lv) or a control: random-llm, vit-llm, single-layer, linear, mlp, transformer",
    )
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="single-layer variant: index of the frozen LLM layer (default: the middle one)",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=None,
        help="lm4lv-lora: LoRA rank on the LLM's q/k/v/o projections (default 8; the LLM is not frozen)",
    )
    p.add_argument("--lora-alpha", type=float, default=None, help="lm4lv-lora: LoRA alpha (default 2 x rank)")
    p.add_argument(
        "--expert-width",
        type=int,
        default=None,
        help="transformer variant: hidden width (default: LM4LV's trainable-parameter count); with "
        "--expert-depth, the feature-space ceiling (the best non-LLM model in the MAE space)",
    )
    p.add_argument("--expert-depth", type=int, default=1, help="transformer variant: number of blocks")
    p.add_argument("--llm", default=None, help="frozen LLM: hub id, folder or .gguf (default: embedded SmolLM2)")
    p.add_argument("--tasks", default="all", help="comma-separated tasks, 'all' (the seven), or 'repeat'")
    p.add_argument("--num-task-tokens", type=int, default=10, help="task tokens per task")


def add_feeding_args(p: argparse.ArgumentParser) -> None:
    """What the LLM is fed in training and how adapter_out starts."""
    p.add_argument(
        "--input-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise on the teacher-forced visual tokens (exposure bias)",
    )
    p.add_argument(
        "--self-condition",
        type=float,
        default=0.0,
        help="fraction of fed-back visual tokens replaced by the model's own tokens (see --self-condition-inputs)",
    )
    p.add_argument(
        "--self-condition-inputs",
        choices=["predicted", "generated"],
        default="predicted",
        help="the own tokens of --self-condition: one no-grad teacher-forced pass's predictions "
        "(predicted), or the model's free-running generation (generated: the fed tokens free running "
        "meets, at the cost of generating each batch)",
    )
    p.add_argument("--ce-weight", type=float, default=1.0, help="weight of the text cross-entropy")
    p.add_argument(
        "--degradations",
        choices=["numpy", "torch"],
        default="numpy",
        help="numpy: each sample through `degrade`, as every shipped stage was trained; torch: the batch "
        "degraded at once on the training device (train/batched_degradations.py; for GPUs)",
    )
    p.add_argument(
        "--ridge-init",
        type=int,
        default=4,
        help="batches used to initialise adapter_out by ridge regression from the teacher-forced hidden "
        "states (0: keep the pseudo-inverse of adapter_in)",
    )


def add_interface_args(p: argparse.ArgumentParser) -> None:
    """How the adapters see MAE features, and what else is trained beside them."""
    p.add_argument(
        "--whiten",
        type=float,
        default=0.0,
        metavar="FLOOR",
        help="the adapters read and write PCA-whitened MAE features (eigenvalues floored at FLOOR x the "
        f"largest; basis from {STATISTICS_BATCHES} batches, stored with the weights). The adapters are "
        "re-expressed in that basis after their initialisation, so the start is unchanged; the L2 loss "
        "stays unwhitened; 0: off",
    )
    p.add_argument(
        "--position-embeddings",
        action="store_true",
        help="a learned vector per visual-token index added to what adapter_in writes, for the LQ and the "
        "HQ image alike (zero-initialised; with --init-from the start is unchanged): an address for "
        "the LLM's copy that a generated token's errors do not corrupt (our MAE's features carry no "
        "absolute position). Not in the paper's trainable set",
    )
    p.add_argument(
        "--task-readouts",
        action="store_true",
        help="one adapter_out per task instead of one shared (as the paper's one model per task has); with "
        "--init-from a checkpoint with a shared readout, each task starts from a copy of it",
    )
    p.add_argument(
        "--task-input-adapters",
        action="store_true",
        help="one adapter_in per task instead of one shared (as the paper's one model per task has); with "
        "--init-from a checkpoint with a shared adapter_in, each task starts from a copy of it",
    )
    p.add_argument(
        "--position-lr-scale",
        type=float,
        default=1.0,
        metavar="SCALE",
        help="the position embeddings learn at SCALE x the learning rate: zero-initialised, at the common "
        "rate they stay about 1%% of an image token's size for hundreds of steps",
    )
    add_lq_gain_args(p)


def add_lq_gain_args(p: argparse.ArgumentParser) -> None:
    """The LQ image's gain apart from the answer's tokens: learned, or annealed on a schedule."""
    p.add_argument(
        "--lq-gain",
        type=float,
        default=None,
        metavar="START",
        help="a learned gain of the LQ image's embeddings (not the answer's), starting at START (1: from "
        "the adapters as they are): a louder LQ token survives the LLM's first layers better; with "
        "--init-from a checkpoint without one it starts at START",
    )
    p.add_argument(
        "--lq-gain-lr-scale",
        type=float,
        default=1.0,
        metavar="SCALE",
        help="the LQ log-gain (--lq-gain) learns at SCALE x the learning rate",
    )
    p.add_argument(
        "--lq-gain-to",
        type=float,
        default=None,
        metavar="END",
        help="anneal the LQ gain instead of learning it: geometrically from --lq-gain START to END over "
        "--lq-gain-ramp steps, then held (the copy can follow a token that grows louder step by step)",
    )
    p.add_argument(
        "--lq-gain-ramp",
        type=int,
        default=None,
        metavar="STEPS",
        help="the steps --lq-gain-to takes to reach END (default: all the run's steps)",
    )


def add_objective_args(p: argparse.ArgumentParser) -> None:
    """Auxiliary objectives beside CE + L2 (train/objectives.py, train/carry.py)."""
    p.add_argument(
        "--pixel-loss",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="add WEIGHT x the MSE between the decoded predicted and decoded target tokens (normalised "
        "pixels, the frozen MAE decoder): weighs feature directions by what they change in the image",
    )
    p.add_argument(
        "--carry-loss",
        type=float,
        default=0.0,
        metavar="WEIGHT",
        help="add WEIGHT x the carry loss (train/carry.py): a linear probe must read each LQ token's "
        "decoded pixels from the residual stream entering --carry-layer at that token's own position; "
        "trains adapter_in toward tokens the LLM's first layers do not rewrite away (0: off)",
    )
    p.add_argument(
        "--carry-layer",
        type=int_list,
        default=[18],
        metavar="LAYERS",
        help="the LLM layer(s) whose input the carry loss reads, comma-separated (one probe each, losses "
        "averaged): the layers that copy the LQ tokens (18 for the embedded SmolLM2-135M, by "
        "train.routing's attention statistics; run it for another LLM)",
    )
    p.add_argument(
        "--carry-kv-head",
        type=int_list,
        default=None,
        metavar="HEADS",
        help="the carry loss reads the value vectors of this KV head of each --carry-layer (one per layer, "
        "comma-separated: what the copying heads move, 2 for the embedded SmolLM2-135M's layer 18) "
        "instead of the whole residual stream",
    )
    p.add_argument(
        "--carry-target",
        choices=["input", "reference"],
        default="input",
        help="what the carry probe predicts at an LQ token's position: that token's own decoded pixels "
        "(input), or the reference's at the same index where the task keeps positions (reference: "
        "the restorations and repeat; rotate / flip keep their own)",
    )


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the run starts from, its kernel, outputs and probes."""
    p.add_argument(
        "--init-from",
        default=None,
        help="start from a trained LM4LV checkpoint (a curriculum, e.g. `--tasks repeat` first): its "
        "adapters and the task tokens of the tasks both runs share; skips --ridge-init",
    )
    p.add_argument(
        "--init-task-from",
        default=None,
        metavar="TASK",
        help="with --init-from: each task of this run that the checkpoint lacks starts from TASK's "
        "adapters and task tokens (a new task from a trained one, e.g. --tasks repeat "
        "--init-task-from denoise) instead of fresh ones",
    )
    p.add_argument(
        "--attention",
        choices=["auto", "eager", "sdpa"],
        default="auto",
        help="the frozen LLM's attention kernel while training (auto: eager on the CPU, sdpa on GPUs)",
    )
    p.add_argument(
        "--export-to",
        default=None,
        help="also write the checkpoint here (e.g. checkpoints/lm4lv-smollm2); default: OUT/lm4lv",
    )
    p.add_argument(
        "--probe-every",
        type=int,
        default=100,
        help="steps between free-running probes on fixed held-out crops (0: off)",
    )


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for add in (add_model_args, add_feeding_args, add_interface_args, add_objective_args, add_run_args):
        add(p)
    add_common_args(p, lr=1e-3, batch_size=8, steps=2000)
    p.set_defaults(mixed_precision="no")  # the frozen LLM already runs in bf16 where fast; heads and loss stay fp32
    return p.parse_args(argv)


def interface_of(args) -> Interface:
    """The adapters' options of this run (`lm4lv_core.heads.Interface`), built once from the flags."""
    return Interface(
        whitening=args.whiten,
        position_embeddings=args.position_embeddings,
        task_readouts=args.task_readouts,
        task_input_adapters=args.task_input_adapters,
        lq_gain=args.lq_gain,
    )


def check_variant_options(args) -> None:
    """Refuse options the chosen variant would not use (one sentence), rather than ignoring them."""
    if args.init_task_from and not args.init_from:
        raise SystemExit("--init-task-from names a task of the --init-from checkpoint; give --init-from too.")
    if args.variant != "transformer" and (args.expert_width or args.expert_depth != 1):
        raise SystemExit(f"--expert-width and --expert-depth apply to the transformer variant, not {args.variant}.")
    if args.variant in AUTOREGRESSIVE_VARIANTS:
        return
    autoregressive_only = (
        ("--input-noise", args.input_noise, 0.0),
        ("--self-condition", args.self_condition, 0.0),
        ("--ce-weight", args.ce_weight, 1.0),
        ("--init-from", args.init_from, None),
        ("--carry-loss", args.carry_loss, 0.0),
        ("--task-readouts", args.task_readouts, False),
        ("--task-input-adapters", args.task_input_adapters, False),
        ("--lq-gain", args.lq_gain, None),
    )
    used = [flag for flag, value, default in autoregressive_only if value != default]
    if used:
        raise SystemExit(
            f"{', '.join(used)} apply to the autoregressive variants "
            f"({', '.join(AUTOREGRESSIVE_VARIANTS)}), not {args.variant}."
        )


@torch.no_grad()
def ridge_init_readout(model, batches, ridge: float = 1e-2) -> float | None:
    """Least-squares fit of the model's linear readout (adapter_out; each task's, if per task) on its
    (teacher-forced) hidden states (a variant with `has_linear_readout`); returns the fit's feature MSE."""
    fit = ReadoutFit()
    for lq, hq, names in batches:
        fit.add(model.readout(lq, hq, names))
    return fit.fit(ridge)


def init_from_checkpoint(model, folder: str, source_task: str | None = None) -> list[str]:
    """Copy a trained checkpoint's adapters and shared task tokens into `model`; returns the names copied. With
    `source_task`, the model's tasks that the checkpoint lacks get copies of that task's adapters and tokens.

    Refuses a checkpoint trained on another vision module or LLM, or one with other adapter shapes."""
    from lm4lv_core.checkpoint import read_config, read_trained_weights

    config = read_config(folder)
    if config.whitening > 0 and model.heads.config.whitening <= 0:
        raise SystemExit(f"--init-from {folder} was trained with --whiten; run this one with --whiten too.")
    if config.position_embeddings and not model.heads.config.position_embeddings:
        raise SystemExit(f"--init-from {folder} was trained with --position-embeddings; run this one with them too.")
    if config.lq_gain and not model.heads.config.lq_gain:
        raise SystemExit(f"--init-from {folder} has a learned LQ gain; run this one with --lq-gain too.")
    if config.task_readouts and not model.heads.config.task_readouts:
        raise SystemExit(f"--init-from {folder} has a readout per task; run this one with --task-readouts too.")
    if config.task_input_adapters and not model.heads.config.task_input_adapters:
        raise SystemExit(
            f"--init-from {folder} has an adapter_in per task; run this one with --task-input-adapters too."
        )
    for key, what in (("vision_fingerprint", "vision module"), ("llm_fingerprint", "LLM")):
        if getattr(config, key) != getattr(model.heads.config, key):
            raise SystemExit(f"--init-from {folder} was trained with another {what} than this run's.")
    own = model.trainable.state_dict()
    found = shared_adapters_per_task(read_trained_weights(folder), model.heads.config)
    if source_task is not None:
        if source_task not in config.tasks:
            raise SystemExit(
                f"--init-task-from {source_task}: {folder} has no such task (it has {', '.join(config.tasks)})."
            )
        new = [task for task in model.heads.config.tasks if task not in config.tasks]
        found = borrowed_task_weights(found, source_task, new)
    shared = {k: v for k, v in found.items() if k in own}
    wrong = [k for k, v in shared.items() if v.shape != own[k].shape]
    if wrong or not any(k.startswith("adapter_") for k in shared):
        raise SystemExit(f"--init-from {folder}: no adapters of matching shape ({wrong or 'none found'}).")
    model.trainable.load_state_dict(shared, strict=False)
    return sorted(shared)


def borrowed_task_weights(weights: dict[str, torch.Tensor], source: str, tasks: list[str]) -> dict[str, torch.Tensor]:
    """`weights` plus, for each of `tasks`, a copy of every per-task weight of `source` (`adapter_in.<source>.*`,
    `adapter_out.<source>.*`, `task_tokens.<source>`) under that task's name."""
    borrowed = dict(weights)
    for key, value in weights.items():
        group, _, rest = key.partition(".")
        name, dot, leaf = rest.partition(".")
        if name == source:
            borrowed.update({f"{group}.{task}{dot}{leaf}": value.clone() for task in tasks})
    return borrowed


def shared_adapters_per_task(weights: dict[str, torch.Tensor], config) -> dict[str, torch.Tensor]:
    """A checkpoint's weights with a shared adapter_out (adapter_in) copied to every task's, for a model with
    per-task readouts (input adapters), and its shared position table to every answer table the checkpoint lacks,
    for a model with answer positions per task; other weights, and what the model shares too, unchanged."""
    weights = dict(weights)
    for adapter, per_task in (("adapter_out", config.task_readouts), ("adapter_in", config.task_input_adapters)):
        if not per_task or f"{adapter}.weight" not in weights:
            continue
        shared = {name: weights.pop(f"{adapter}.{name}") for name in ("weight", "bias")}
        weights.update(
            {f"{adapter}.{task}.{name}": value.clone() for task in config.tasks for name, value in shared.items()}
        )
    return weights


def write_training_record(export_dir: str, args, model, tasks: list[str]) -> None:
    """`training.json` next to the checkpoint: variant, budget, trainable parameters, wall time, final losses."""
    log = os.path.join(args.out, "log.csv")
    rows = []
    if os.path.exists(log):
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
    steps = int(rows[-1]["step"]) + 1 if rows else 0
    tail = rows[-50:]
    record = {
        "variant": args.variant,
        "data": args.data,
        "vision": args.vision,
        "llm": args.llm or "smollm2",
        "layer": getattr(model.config, "layer", None) if not model.autoregressive else None,
        "tasks": tasks,
        "steps": steps,
        "batch_size": args.batch_size,
        "world_size": getattr(args, "world_size", 1),
        "samples": steps * args.batch_size * getattr(args, "world_size", 1),
        "seconds": round(sum(float(r["seconds"]) for r in _run_ends(rows)), 1),
        "trainable_params": model.trainable_parameters(),
        "lr": args.lr,
        "seed": args.seed,
        "self_condition": args.self_condition if model.autoregressive else 0.0,
        "self_condition_inputs": args.self_condition_inputs,
        "ce_weight": args.ce_weight if model.autoregressive else 0.0,
        "init_from": args.init_from,
        "init_task_from": args.init_task_from,
        "degradations": args.degradations,
        "whiten": args.whiten,
        "position_embeddings": args.position_embeddings,
        "task_readouts": args.task_readouts,
        "task_input_adapters": args.task_input_adapters,
        "position_lr_scale": args.position_lr_scale if args.position_embeddings else None,
        "lq_gain": args.lq_gain,
        "lq_gain_lr_scale": args.lq_gain_lr_scale if args.lq_gain is not None and args.lq_gain_to is None else None,
        "lq_gain_to": args.lq_gain_to,
        "lq_gain_ramp": lq_gain_ramp(args) if args.lq_gain_to is not None else None,
        "pixel_loss": args.pixel_loss,
        "carry_loss": args.carry_loss,
        "carry_layer": args.carry_layer if args.carry_loss > 0 else None,  # lists: one entry per site
        "carry_kv_head": args.carry_kv_head if args.carry_loss > 0 else None,
        "carry_target": args.carry_target if args.carry_loss > 0 else None,
        "llm_frozen": model.llm_frozen,
        "llm_dtype": dtype_name(model.llm.dtype) if model.llm is not None else None,
        "lora_rank": args.lora_rank if args.variant == "lm4lv-lora" else None,
        "expert": {"width": model.config.width, "depth": model.config.depth} if args.variant == "transformer" else None,
        "final_l2": sum(float(r["l2"]) for r in tail) / len(tail) if tail else None,
    }
    with open(os.path.join(export_dir, "training.json"), "w") as f:
        json.dump(record, f, indent=2)


def _run_ends(rows: list[dict]) -> list[dict]:
    """The last row of each (resumed) run segment: `seconds` restarts from 0 when a run is resumed."""
    ends = [r for r, nxt in zip(rows, rows[1:]) if float(nxt["seconds"]) < float(r["seconds"])]
    return ends + rows[-1:]


def initialise(model, args, accelerator, crops, tasks: list[str]) -> None:
    """Before step 0 (or on resume, what is not run state): the adapters from --init-from or the ridge fit of
    adapter_out, then the whitening basis (the same functions re-expressed)."""
    vision, resuming = model.vision, will_resume(args)
    statistics_batches = STATISTICS_BATCHES if args.whiten > 0 else 0
    ridge_batches = args.ridge_init if not (resuming or args.init_from) else 0
    init_batches = [
        make_pairs(crops, vision, 10**9 + i, args.batch_size, tasks, args.seed, degradations=args.degradations)
        for i in range(max(statistics_batches, ridge_batches))
    ]  # far beyond any training step
    statistics = [t for lq, hq, _ in init_batches[:statistics_batches] for t in (lq, hq)]
    if args.init_from and not resuming:
        copied = init_from_checkpoint(model, args.init_from, args.init_task_from)
        accelerator.print(f"initialised from {args.init_from}: {', '.join(copied)}")
    elif args.ridge_init > 0 and not resuming and model.has_linear_readout:
        fit = ridge_init_readout(model, init_batches[:ridge_batches])
        accelerator.print(f"adapter_out ridge init: teacher-forced feature MSE {fit:.4f}")
    if args.whiten > 0:  # after the adapters' initialisation (the same functions in the new basis)
        model.heads.set_whitening(torch.cat(statistics))


def with_carry_objective(model, args, accelerator, crops, tasks: list[str]):
    """The module the loop trains: `model`, or with --carry-loss the model plus the carry objective, whose probes are
    ridge-fitted on 4 batches at the start (on resume they come back with the run state)."""
    if args.carry_loss <= 0:
        return model
    from train.carry import CarryObjective

    objective = CarryObjective(model, args.carry_layer, args.carry_loss, args.carry_kv_head, args.carry_target)
    if not will_resume(args):
        batches = [
            make_pairs(
                crops, model.vision, 10**9 + 100 + i, args.batch_size, tasks, args.seed, degradations=args.degradations
            )
            for i in range(4)
        ]
        fits = objective.initialise(batches)
        accelerator.print(
            "carry probes at layers "
            + ", ".join(f"{layer}: ridge fit, pixel MSE {fit:.4f}" for layer, fit in zip(args.carry_layer, fits))
        )
    return objective


def lq_gain_ramp(args) -> int:
    """The steps the annealed LQ gain (--lq-gain-to) takes to reach its end."""
    return args.lq_gain_ramp if args.lq_gain_ramp is not None else args.steps


def lq_gain_at(step: int, args) -> float:
    """The annealed LQ gain at `step`: geometric from --lq-gain to --lq-gain-to over the ramp, then held."""
    progress = min(1.0, step / max(1, lq_gain_ramp(args) - 1))
    return args.lq_gain * (args.lq_gain_to / args.lq_gain) ** progress


def make_loss_fn(model, args, accelerator, crops, tasks: list[str]):
    """`loss_fn(module, step)` of the training loop: batch `step`, self-conditioning, the pixel loss, the probe."""
    vision = model.vision
    probe = FreeRunningProbe(model, tasks) if args.probe_every > 0 else None
    probe_log = os.path.join(args.out, "probe.csv")
    if args.lq_gain_to is not None:
        model.heads.lq_log_gain.requires_grad_(False)  # annealed: set at each step below, not trained

    def loss_fn(module, step):
        if args.lq_gain_to is not None:
            with torch.no_grad():
                model.heads.lq_log_gain.fill_(math.log(lq_gain_at(step, args)))
        lq, hq, names = make_pairs(
            crops,
            vision,
            step,
            args.batch_size,
            tasks,
            args.seed,
            accelerator.process_index,
            accelerator.num_processes,
            args.degradations,
        )
        options = {}
        if model.autoregressive:
            fed = fed_options(model, lq, hq, names, args.self_condition, args.self_condition_inputs, args.input_noise)
            options = dict(ce_weight=args.ce_weight, **fed)
        terms = module(lq, hq, names, **options)
        pred = terms.pop("pred")
        if args.pixel_loss > 0:
            terms["pixel"] = pixel_loss(vision, pred, hq)
            terms["loss"] = terms["loss"] + args.pixel_loss * terms["pixel"]
        if probe is not None and step % args.probe_every == 0 and accelerator.is_main_process:
            row = {"step": step, **probe.run()}
            accelerator.print("probe " + " ".join(f"{k}={v:.3f}" for k, v in row.items() if k != "step"))
            append_row(probe_log, row)
        return terms

    return loss_fn


def check_option_pairs(args) -> None:
    """Refuse an option given without the one it modifies, in one sentence."""
    if args.position_lr_scale != 1.0 and not args.position_embeddings:
        raise SystemExit("--position-lr-scale applies with --position-embeddings.")
    if args.lq_gain_lr_scale != 1.0 and (args.lq_gain is None or args.lq_gain_to is not None):
        raise SystemExit("--lq-gain-lr-scale applies to a learned gain: --lq-gain without --lq-gain-to.")
    if (args.lq_gain_to is not None or args.lq_gain_ramp is not None) and args.lq_gain is None:
        raise SystemExit("--lq-gain-to and --lq-gain-ramp anneal the gain from --lq-gain START; give it.")
    if args.lq_gain_ramp is not None and args.lq_gain_to is None:
        raise SystemExit("--lq-gain-ramp applies with --lq-gain-to.")
    if args.lq_gain_to is not None and args.lq_gain_to <= 0:
        raise SystemExit(f"--lq-gain-to is a gain, positive, not {args.lq_gain_to}.")
    if args.carry_kv_head is not None and args.carry_loss <= 0:
        raise SystemExit("--carry-kv-head applies with --carry-loss.")
    if args.carry_target != "input" and args.carry_loss <= 0:
        raise SystemExit("--carry-target applies with --carry-loss.")


def main(argv=None):
    args = parse_args(argv)
    tasks = parse_tasks(args.tasks)
    check_variant_options(args)
    check_option_pairs(args)
    accelerator = make_accelerator(args)
    args.world_size = accelerator.num_processes  # recorded in training.json; each rank draws its shard of a step
    model = build_model(
        args.variant,
        llm=args.llm,
        vision=args.vision,
        tasks=tasks,
        num_task_tokens=args.num_task_tokens,
        layer=args.layer,
        device=accelerator.device,
        seed=args.seed,
        lora_rank=args.lora_rank,
        lora_alpha=args.lora_alpha,
        interface=interface_of(args),
        expert_width=args.expert_width,
        expert_depth=args.expert_depth,
    )
    if model.llm is not None:  # every variant but the experts runs the LLM
        model.llm.set_attn_implementation(training_attention(accelerator.device, args.attention))
    frozen = "" if model.llm_frozen else " (LLM NOT frozen: LoRA)"
    accelerator.print(f"variant {args.variant}: {model.trainable_parameters():,} trainable parameters{frozen}")
    crops = RandomCrops(args.data, model.vision.image_size, seed=args.seed + 2)
    initialise(model, args, accelerator, crops, tasks)
    export_dir = args.export_to or os.path.join(args.out, "lm4lv")

    def export(out):
        vision_ref = args.vision
        if os.path.isdir(args.vision):
            vision_ref = os.path.relpath(os.path.abspath(args.vision), os.path.abspath(export_dir))
        model.save_pretrained(export_dir, vision_path=vision_ref)
        write_training_record(export_dir, args, model, tasks)

    loss_fn = make_loss_fn(model, args, accelerator, crops, tasks)
    trained = with_carry_objective(model, args, accelerator, crops, tasks)
    last = train_loop(
        args,
        accelerator,
        trained,
        loss_fn,
        export,
        desc=f"{args.variant} {','.join(tasks)}",
        lr_scales={"visual_positions": args.position_lr_scale, "lq_log_gain": args.lq_gain_lr_scale},
    )
    accelerator.print(f"done: {last}; checkpoint in {export_dir}")


if __name__ == "__main__":
    main()
