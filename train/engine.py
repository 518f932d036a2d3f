"""The training loop shared by every entry point: accelerate, AdamW, warm-up + cosine decay, clipping, a CSV log,
regular safetensors checkpoints and an exact `--resume` (weights, optimizer state, step; the data order is a function
of the step, see `train.data`)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import time
from collections.abc import Callable

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from lm4lv_core.device import cpu_has_fast_bf16


def add_common_args(parser: argparse.ArgumentParser, *, lr: float, batch_size: int, steps: int) -> None:
    g = parser.add_argument_group("training loop")
    g.add_argument("--data", default="../shared/corpus/train", help="folder of training images (searched recursively)")
    g.add_argument("--out", required=True, help="run folder: log.csv, state/ for --resume, and the exported checkpoint")
    g.add_argument("--steps", type=int, default=steps, help="optimizer steps in the whole run")
    g.add_argument("--batch-size", type=int, default=batch_size, help="images per step and process")
    g.add_argument("--lr", type=float, default=lr, help="peak learning rate")
    g.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: 5%% of --steps)")
    g.add_argument("--min-lr-ratio", type=float, default=0.1, help="final learning rate as a fraction of --lr")
    g.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0: off)")
    g.add_argument("--seed", type=int, default=0, help="seed of the initialisation and the data order")
    g.add_argument("--save-every", type=int, default=200, help="steps between checkpoints")
    g.add_argument("--max-minutes", type=float, default=0, help="stop (and save) after this wall time; 0: no limit")
    g.add_argument("--resume", action="store_true", help="continue the run in --out exactly where it stopped")
    g.add_argument(
        "--mixed-precision",
        choices=["auto", "no", "bf16", "fp16"],
        default="auto",
        help="autocast precision (auto: bf16 on CUDA or a CPU with bf16 matrix units)",
    )
    g.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")


def make_accelerator(args):
    """One Accelerator for every launcher: a plain `python -m`, `torchrun --nproc_per_node N` or `accelerate launch`
    (CPU processes talk over gloo, GPUs over nccl). Without an accelerator device accelerate is told so (`cpu=True`):
    otherwise it treats a torchrun job on CPUs as N separate single-process runs. Parameters a step does not use (the
    adapters of tasks absent from its batch) are allowed: DDP is told to look for them."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if args.threads:
        torch.set_num_threads(args.threads)
    precision = args.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() or cpu_has_fast_bf16() else "no"
    accelerator_device = hasattr(torch, "accelerator") and torch.accelerator.is_available()
    return Accelerator(
        mixed_precision=precision,
        cpu=not accelerator_device,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def load_autoregressive(checkpoint: str | None, threads: int, purpose: str):
    """The entry points that read a trained LM4LV (or random-llm) checkpoint: set the thread count and load it;
    a one-pass control is refused with one sentence saying what `purpose` needs."""
    from lm4lv_core.variants import load_model

    if threads:
        torch.set_num_threads(threads)
    model = load_model(checkpoint)
    if not model.autoregressive:
        raise SystemExit(
            f"{checkpoint} is a one-pass control; {purpose} needs an autoregressive checkpoint (lm4lv, random-llm)."
        )
    return model


def save_next_to(model, checkpoint: str, out: str) -> None:
    """Save `model` (loaded from `checkpoint`) to `out`, its vision module's relative path re-expressed from there."""
    vision = model.heads.config.vision
    if not os.path.isabs(vision) and os.path.exists(os.path.join(checkpoint, vision)):
        vision = os.path.relpath(os.path.join(os.path.abspath(checkpoint), vision), os.path.abspath(out))
    model.save_pretrained(out, vision_path=vision)


def read_record(folder: str, names=("training.json",)) -> dict | None:
    """The first of `names` (JSON records next to a checkpoint: `training.json` from `train.train_lm4lv`,
    `merge.json` from `train.merge_tasks`) that exists in `folder`, parsed; None if none does."""
    for name in names:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            with open(path) as f:
                return json.load(f)
    return None


def lr_at(step: int, args) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    warmup = args.warmup if args.warmup is not None else max(1, args.steps // 20)
    if step < warmup:
        return args.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, args.steps - warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def save_state(path: str, model: nn.Module, optimizer: torch.optim.Optimizer, step: int, total_steps: int) -> None:
    """Trainable weights + AdamW moments as safetensors, the rest (with the run's planned `total_steps`) as JSON;
    written atomically."""
    os.makedirs(path, exist_ok=True)
    tensors = {f"model.{k}": v for k, v in trainable_state(model).items()}
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().contiguous().cpu()
    save_file(tensors, os.path.join(path, "state.safetensors.tmp"))
    meta = {"step": step, "steps": total_steps, "param_groups": opt["param_groups"]}
    with open(os.path.join(path, "state.json.tmp"), "w") as f:
        json.dump(meta, f)
    os.replace(os.path.join(path, "state.safetensors.tmp"), os.path.join(path, "state.safetensors"))
    os.replace(os.path.join(path, "state.json.tmp"), os.path.join(path, "state.json"))


def load_state(path: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    tensors = load_file(os.path.join(path, "state.safetensors"))
    with open(os.path.join(path, "state.json")) as f:
        meta = json.load(f)
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith("model."):
            params[key[len("model.") :]].data.copy_(value)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def planned_steps(state_dir: str) -> int | None:
    """The --steps a saved run was started with (None: no state, or a state saved before the total was recorded)."""
    path = os.path.join(state_dir, "state.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f).get("steps")


def check_resumable(args, state_dir: str) -> None:
    """A run stopped part way resumes only with the --steps it was started with (its learning-rate schedule follows
    the total); a finished one may be continued to a longer total (a new schedule from its end, as stage 3b did)."""
    with open(os.path.join(state_dir, "state.json")) as f:
        meta = json.load(f)
    planned, step = meta.get("steps"), meta["step"]
    if planned is None or planned == args.steps:
        return
    if step < planned or args.steps < planned:
        raise SystemExit(
            f"--resume: {args.out} holds a run at step {step} of {planned}, not of --steps {args.steps} (its "
            f"learning-rate schedule follows the total): resume it with --steps {planned}, or give a new --out."
        )


def will_resume(args) -> bool:
    """Whether `train_loop` will continue a saved run (so initialisations before it must be skipped)."""
    return bool(args.resume) and os.path.isfile(os.path.join(args.out, "state", "state.json"))


def param_groups(model: nn.Module, lr_scales: dict[str, float] | None = None) -> list[dict]:
    """The parameters of `model` that require grad, as optimiser groups: one per entry of `lr_scales` (a parameter
    name's dot-separated part, e.g. "visual_positions" -> multiplier of the scheduled learning rate) that matches
    any, then the rest at scale 1."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = []
    for part, scale in (lr_scales or {}).items():
        matched = [p for n, p in named if part in n.split(".")]
        if matched:
            groups.append({"params": matched, "lr_scale": scale})
    taken = {id(p) for g in groups for p in g["params"]}
    groups.append({"params": [p for _, p in named if id(p) not in taken], "lr_scale": 1.0})
    return groups


def train_loop(
    args,
    accelerator,
    model: nn.Module,
    loss_fn: Callable[[nn.Module, int], dict[str, torch.Tensor]],
    export: Callable[[str], None],
    desc: str,
    lr_scales: dict[str, float] | None = None,
) -> dict[str, float]:
    """Optimise the parameters of `model` that require grad; `loss_fn(model, step)` returns {"loss": ..., ...}.

    `export(folder)` writes the shippable checkpoint; it is called at every save and at the end. `lr_scales`: see
    `param_groups`. Returns the last logged values.
    """
    os.makedirs(args.out, exist_ok=True)
    groups = param_groups(model, lr_scales)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.95), weight_decay=args.weight_decay)
    state_dir = os.path.join(args.out, "state")
    start = resume_from(args, accelerator, model, optimizer, state_dir)
    model, optimizer = accelerator.prepare(model, optimizer)
    log_path = os.path.join(args.out, "log.csv")
    if start == 0 and accelerator.is_main_process and os.path.exists(log_path):
        os.remove(log_path)
    stop = {"now": False}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    began, last = time.time(), {}
    bar = tqdm(
        range(start, args.steps),
        initial=start,
        total=args.steps,
        desc=desc,
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    step = start
    try:
        for step in bar:
            last = optimiser_step(args, accelerator, model, optimizer, params, loss_fn, step)
            last["seconds"] = time.time() - began
            if accelerator.is_main_process:
                append_row(log_path, {"step": step, **last})
                bar.set_postfix({k: f"{v:.4g}" for k, v in last.items() if k not in {"seconds", "lr"}})
            done = step + 1
            timed_out = args.max_minutes and (time.time() - began) > args.max_minutes * 60
            if done % args.save_every == 0 or done == args.steps or timed_out or stop["now"]:
                _save(accelerator, model, optimizer, state_dir, done, export, args)
            if timed_out or stop["now"]:
                accelerator.print(
                    f"stopping at step {done} ({'time limit' if timed_out else 'SIGTERM'}); continue with --resume"
                )
                break
    except KeyboardInterrupt:
        _save(accelerator, model, optimizer, state_dir, step, export, args)
        raise
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    if start >= args.steps:  # nothing to train (e.g. --steps 0 after an initialisation): export what there is
        _save(accelerator, model, optimizer, state_dir, start, export, args)
    return last


def optimiser_step(args, accelerator, model, optimizer, params: list, loss_fn, step: int) -> dict[str, float]:
    """One step at the schedule's learning rate (times each group's `lr_scale`); returns the logged values."""
    lr = lr_at(step, args)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    model.train()
    # randomness inside the step (MAE masks, noise) is a function of the step, so --resume is exact
    torch.manual_seed(args.seed * 1_000_003 + step * 1009 + accelerator.process_index)
    with accelerator.autocast():
        terms = loss_fn(model, step)
    accelerator.backward(terms["loss"])
    grad_norm = accelerator.clip_grad_norm_(params, args.clip) if args.clip > 0 else torch.tensor(0.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    last = reduced_terms(accelerator, terms)
    last.update(lr=lr, grad_norm=float(grad_norm))
    return last


def reduced_terms(accelerator, terms: dict) -> dict[str, float]:
    """The step's logged values, each averaged over the processes (every rank's batch is a shard of the step's)."""
    values = torch.tensor(
        [float(v.detach()) if torch.is_tensor(v) else float(v) for v in terms.values()], device=accelerator.device
    )  # (K,)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return dict(zip(terms, values.tolist()))


def resume_from(args, accelerator, model: nn.Module, optimizer, state_dir: str) -> int:
    """The step to start at: the saved one with --resume (weights and optimizer state restored), else 0."""
    if will_resume(args):
        check_resumable(args, state_dir)
        start = load_state(state_dir, model, optimizer)
        accelerator.print(f"resuming {args.out} at step {start}")
        return start
    if args.resume:
        accelerator.print(f"--resume: no state in {state_dir}; starting from step 0")
    return 0


def append_row(path: str, row: dict) -> None:
    """Append one row to a CSV log, writing the header when the file is new."""
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def check_ranks_agree(accelerator, model: nn.Module) -> float:
    """The trainable weights' fingerprint (a fixed random projection of them), checked equal on every process of a
    multi-process run: DDP keeps the ranks' copies identical, and a run whose ranks drifted apart must not be saved
    as one model."""
    state = trainable_state(accelerator.unwrap_model(model))
    generator = torch.Generator().manual_seed(0)
    value = sum(
        float((v.double().flatten() * torch.randn(v.numel(), generator=generator, dtype=torch.float64)).sum())
        for _, v in sorted(state.items())
    )
    values = accelerator.gather(torch.tensor([value], dtype=torch.float64, device=accelerator.device)).tolist()
    if max(values) - min(values) > 1e-6 * max(1.0, abs(value)):
        raise RuntimeError(f"The {accelerator.num_processes} processes hold different weights ({values}).")
    return value


def _save(accelerator, model, optimizer, state_dir, step, export, args):
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:  # one process has nothing to compare
        fingerprint = check_ranks_agree(accelerator, model)
        accelerator.print(f"step {step}: the {accelerator.num_processes} processes agree (weights {fingerprint:.9g})")
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_state(state_dir, unwrapped, optimizer, step, args.steps)
        export(args.out)
