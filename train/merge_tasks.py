"""Assemble one LM4LV checkpoint from models trained per task, as the paper trains one model per task.

A part is a checkpoint trained on one task (`train_lm4lv --tasks denoise --init-from BASE`), or on several with an
adapter pair per task (`--task-input-adapters --task-readouts`). Its tasks' adapters and task tokens replace the
base's; everything the tasks share must be the base's own: the frozen LLM and vision module, the feature statistics
and the position embeddings (train a part with `--position-lr-scale 0`). A part's whitening basis may differ (each
run re-derives it): its adapters are re-expressed in the base's, the same functions. The result has an adapter_in
and an adapter_out per task (and, when a part has them, an answer position table per task); its other tasks keep
the base's weights.

    python -m train.merge_tasks --base checkpoints/lm4lv-smollm2 --part runs/denoise/lm4lv --part runs/deblur/lm4lv \
        --out runs/merged
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from train.engine import load_autoregressive, read_record, save_next_to

SHARED_CONFIG = (
    "llm_fingerprint",
    "vision_fingerprint",
    "num_task_tokens",
    "whitening",
    "position_embeddings",
    "lora_rank",
)


def part_tasks(part) -> list[str]:
    """The tasks whose weights a part gives: its only task, or every task when it has an adapter pair per task."""
    config = part.heads.config
    if len(config.tasks) == 1 or (config.task_input_adapters and config.task_readouts):
        return list(config.tasks)
    raise SystemExit(
        f"A part trained on {len(config.tasks)} tasks with a shared adapter cannot be split by task; "
        f"train it on one task, or with --task-input-adapters --task-readouts."
    )


def check_shared(base, part, name: str) -> None:
    """Refuse (one sentence) a part whose shared weights or settings are not the base's."""
    for key in SHARED_CONFIG:
        if getattr(base.heads.config, key) != getattr(part.heads.config, key):
            raise SystemExit(
                f"{name} differs from the base in {key}; a part must be trained from the base "
                f"(--init-from) with the same settings."
            )
    for buffer in ("visual_positions",):
        mine, theirs = getattr(base.heads, buffer, None), getattr(part.heads, buffer, None)
        if mine is not None and not torch.equal(mine, theirs):
            hint = " (train it with --position-lr-scale 0)" if buffer == "visual_positions" else ""
            raise SystemExit(f"{name} changed the shared {buffer}{hint}; its adapters would not fit the base's.")


@torch.no_grad()
def merge(base, parts: dict[str, object]) -> dict[str, str]:
    """Copy each part's tasks' adapters and task tokens into `base` (split into per-task adapters first); returns
    task -> part name."""
    heads = base.heads
    heads.split_input_adapter()
    heads.split_readout()
    source = {}
    for name, part in parts.items():
        check_shared(base, part, name)
        if heads.config.whitening > 0:
            part.heads.rebase_whitening(heads.whiten_mean, heads.whiten_basis, heads.whiten_inverse)
        for task in part_tasks(part):
            if task not in heads.task_tokens:
                raise SystemExit(f"{name} has task {task!r}, which the base has not.")
            if task in source:
                raise SystemExit(f"Task {task!r} comes from both {source[task]} and {name}; give each task once.")
            heads.input_adapter(task).load_state_dict(part.heads.input_adapter(task).state_dict())
            heads.readout(task).load_state_dict(part.heads.readout(task).state_dict())
            heads.task_tokens[task].copy_(part.heads.task_tokens[task])
            source[task] = name
    return source


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the checkpoint the parts were trained from")
    p.add_argument("--part", action="append", required=True, help="a checkpoint trained per task (repeatable)")
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    args = p.parse_args(argv)
    base = load_autoregressive(args.base, args.threads, "merging")
    parts = {path: load_autoregressive(path, args.threads, "merging") for path in args.part}
    source = merge(base, parts)
    save_next_to(base, args.base, args.out)
    with open(os.path.join(args.out, "merge.json"), "w") as f:
        json.dump(
            {"base": args.base, "tasks": source, "training": {name: read_record(name) for name in parts}}, f, indent=2
        )
    print(f"merged checkpoint in {args.out}: " + ", ".join(f"{t} from {n}" for t, n in source.items()))


if __name__ == "__main__":
    main()
