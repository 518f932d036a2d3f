"""Command line: `python -m lm4lv_core restore ...`, `... degrade ...` and `... models` (the shipped checkpoints)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings

from .errors import LM4LVError
from .images import IMAGE_EXTENSIONS
from .tasks import TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lm4lv_core", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    r = sub.add_parser("restore", help="restore images with a task-token set")
    r.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    r.add_argument("--task", required=True, choices=TASKS, help="task-token set to use")
    r.add_argument("--out", required=True, help="output folder")
    r.add_argument(
        "--checkpoint",
        default=None,
        help="checkpoint folder, hub id or shipped name (`models` lists them; one per frozen LLM), LM4LV "
        "or a control of train.train_lm4lv --variant (default: embedded)",
    )
    r.add_argument("--llm", default=None, help="override the checkpoint's LLM (hub id, folder or .gguf)")
    r.add_argument("--vision", default=None, help="override the checkpoint's vision module (hub id or folder)")
    r.add_argument(
        "--mode",
        choices=["tile", "resize"],
        default="tile",
        help="tile: keep each image's size, restoring overlapping tiles of the model's size (default); "
        "resize: center-crop and resize to the model's size",
    )
    r.add_argument("--overlap", type=int, default=16, help="tile overlap in pixels (tile mode)")
    r.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="tiles (tile mode; default: as many as 1 GB of KV cache holds, at most 64) or images (resize "
        "mode; default 16) generated together",
    )
    r.add_argument(
        "--compile",
        action="store_true",
        help="run the LLM under torch.compile: faster decoding for many images or large ones, after a "
        "compile of about half a minute (minutes the first time on a machine)",
    )
    r.add_argument("--overwrite", action="store_true", help="redo images whose outputs already exist")
    r.add_argument("--json", default=None, help="also write a JSON summary with timings to this file")

    sub.add_parser("models", help="list the shipped checkpoints and the frozen LLM each was trained with")

    d = sub.add_parser("degrade", help="synthesise a task's degraded input from a clean image")
    d.add_argument("image")
    d.add_argument("--task", required=True, choices=TASKS)
    d.add_argument("--seed", type=int, default=0)
    d.add_argument(
        "--strength",
        default=None,
        help="'fixed' for the evaluation strength, a number, or omitted for the paper's random strength",
    )
    d.add_argument("--out", required=True, help="output file (PNG)")
    return parser


def collect_inputs(paths: list[str]) -> tuple[list[str], list[str]]:
    """Files to process (folders expanded recursively, sorted) and warnings for what is skipped."""
    files, skipped = [], []
    for path in paths:
        if os.path.isdir(path):
            for folder, _, names in sorted(os.walk(path)):
                for name in sorted(names):
                    full = os.path.join(folder, name)
                    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                        files.append(full)
                    else:
                        skipped.append(f"skipping {full}: not an image file name")
        else:
            files.append(path)
    return files, skipped


def output_paths(out: str, path: str, task: str) -> tuple[str, str]:
    stem = os.path.splitext(os.path.basename(path))[0]
    return os.path.join(out, f"{stem}_{task}.png"), os.path.join(out, f"{stem}_{task}_mae_r.png")


def cmd_restore(args) -> int:
    from tqdm import tqdm

    from .variants import load_model

    files, skipped = collect_inputs(args.inputs)
    for message in skipped:
        print(message, file=sys.stderr)
    if not files:
        print("No input images found.", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr to our progress bar and one sentence per problem
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        model = load_model(args.checkpoint, llm=args.llm, vision=args.vision)
        if args.compile:
            compile_model(model)
    todo, failures = plan_outputs(files, args)
    records = []
    bar = tqdm(total=len(todo), desc=f"restore ({args.task})", unit="image", file=sys.stderr, disable=len(todo) < 2)
    per_call = (args.batch_size or 16) if args.mode == "resize" else 1
    for start in range(0, len(todo), per_call):
        chunk, images = [], []
        for path in todo[start : start + per_call]:
            try:
                images.append(model.fit(path, "tile")[0])  # as loaded: any size
                chunk.append(path)
            except LM4LVError as exc:
                tqdm.write(str(exc), file=sys.stderr)
                failures += 1
                bar.update(1)
        if chunk:
            records += save_results(chunk, *restore_chunk(model, chunk, images, args), args)
            bar.update(len(chunk))
    bar.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "task": args.task,
                    "images": records,
                    "failed": failures,
                    "seconds": round(sum(r["seconds"] for r in records), 3),
                },
                f,
                indent=2,
            )
    return 1 if failures else 0


def compile_model(model) -> None:
    """--compile: the LLM of an autoregressive model under torch.compile; a control without an LLM is left as is."""
    if not model.compile_llm():
        print(f"--compile: the {model.variant} control runs no LLM to compile; running it as is.", file=sys.stderr)


def plan_outputs(files: list[str], args) -> tuple[list[str], int]:
    """The inputs to restore (not those whose outputs exist, unless --overwrite), and how many are refused."""
    todo, failures = [], 0
    for path in files:
        restored, mae_r = output_paths(args.out, path, args.task)
        if os.path.abspath(restored) == os.path.abspath(path) or os.path.abspath(mae_r) == os.path.abspath(path):
            print(f"{path}: refusing to overwrite an input file; choose another --out.", file=sys.stderr)
            failures += 1
        elif os.path.exists(restored) and os.path.exists(mae_r) and not args.overwrite:
            print(f"skipping {path}: outputs exist (use --overwrite)", file=sys.stderr)
        else:
            todo.append(path)
    return todo, failures


def restore_chunk(model, chunk: list[str], images: list, args):
    """-> (Results of the images, seconds per image): one batch (resize) or one image in tiles, with a tile bar."""
    from tqdm import tqdm

    began = time.time()
    if args.mode == "resize":
        results = model.restore_batch(images, args.task, mode="resize")
    else:
        with tqdm(desc=os.path.basename(chunk[0]), unit="tile", file=sys.stderr, leave=False) as tiles_bar:

            def progress(done, total):
                tiles_bar.total = total
                tiles_bar.update(done - tiles_bar.n)

            results = [
                model.restore(
                    images[0],
                    args.task,
                    mode="tile",
                    overlap=args.overlap,
                    batch_size=args.batch_size,
                    progress=progress,
                )
            ]
    return results, (time.time() - began) / len(chunk)


def save_results(chunk: list[str], results: list, seconds: float, args) -> list[dict]:
    """Write each output and its MAE-r as PNG; print and return one JSON record per image."""
    from tqdm import tqdm

    records = []
    for path, result in zip(chunk, results):
        restored, mae_r = output_paths(args.out, path, args.task)
        result.image.save(restored)
        result.mae_r.save(mae_r)
        record = {
            "input": path,
            "task": args.task,
            "output": restored,
            "mae_r": mae_r,
            "seconds": round(seconds, 3),
            "size": list(result.image.size),
            "tiles": int(result.tokens.shape[0]) if result.tokens.dim() == 3 else 1,
            "text": result.text,
            "notes": result.notes,
        }
        records.append(record)
        tqdm.write(json.dumps(record), file=sys.stdout)
    return records


def cmd_degrade(args) -> int:
    from .degrade import degrade
    from .images import load_image

    loaded = load_image(args.image)
    strength = args.strength
    if strength not in (None, "fixed"):
        try:
            strength = float(strength)
        except ValueError:
            print(f"--strength must be 'fixed' or a number, not {strength!r}.", file=sys.stderr)
            return 2
    degrade(loaded.image, args.task, seed=args.seed, strength=strength).save(args.out)
    print(
        json.dumps(
            {"input": args.image, "task": args.task, "seed": args.seed, "output": args.out, "notes": loaded.notes}
        )
    )
    return 0


def cmd_models(args) -> int:
    """One line per shipped checkpoint: its name (for --checkpoint), the LLM (name, size, head width), its folder."""
    from .checkpoint import DEFAULT_CHECKPOINT, read_raw_config, shipped_checkpoints
    from .llm import llm_label

    for name, folder in shipped_checkpoints().items():
        raw = read_raw_config(str(folder))
        state = "frozen" if raw.get("lora_rank", 0) == 0 else "adapted with LoRA (a control)"
        default = "  [default]" if folder == DEFAULT_CHECKPOINT else ""
        print(f"{name:22s} {llm_label(raw.get('llm'))}, {state}{default}")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"restore": cmd_restore, "degrade": cmd_degrade, "models": cmd_models}
        return commands[args.command](args)
    except LM4LVError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        return 130
