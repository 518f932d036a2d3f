"""Can position vectors address the copy for rotate and flip? A diagnostic (no training).

For each spatial geometry (rotate, flip), the answer tokens of a checkpoint's task get a position table designed to
point at each token's source (`--task-answer-positions`' tables, set by hand): "shared" (the shared table: answer
token j gets LQ token j's address), "own" (answer token j gets its source's address), "prev" (the slot that
predicts token j + 1 gets the address of the LQ token before that token's source: what an induction head, which
attends to the token after the one it matches, would need) or "zero" (no answer positions). Teacher forced on the
clean skimage photos (LQ: the photo, HQ: its rotated / flipped copy); prints the three heads with the most attention
mass on the right source (`train.routing.attention_statistics` scored on the geometry's sources).
`--scales` multiplies the designed tables (how loud the address must be); `--blank-content` gives every answer token
the mean answer content (the address is then its position alone).

    python research/levers/spatial/addressing.py --checkpoint checkpoints/lm4lv-smollm2 --json OUT
"""
import argparse
import json

import torch

from lm4lv_core.degrade import target
from lm4lv_core.sequence import HQ
from train.engine import load_autoregressive
from train.routing import attention_statistics, probe_images, sequence_embeds, to_tensor, token_sources


def designed_table(shared: torch.Tensor, sources: torch.Tensor, mode: str) -> torch.Tensor:
    """(N, llm_dim) shared position table, (N,) each answer token's source -> the answer table of `mode`."""
    table = shared.clone()
    if mode == "zero":
        table = torch.zeros_like(shared)
    elif mode == "own":
        table = shared[sources]
    elif mode == "prev":
        table[:-1] = shared[sources[1:] - 1]
    return table


@torch.no_grad()
def source_mass(model, task: str, geometry: str, clean: list, top: int = 3, blank: bool = False) -> list:
    """The `top` heads by attention mass from the writing positions on each answer token's source (`blank`: the
    answer tokens' content replaced by its mean, their positions kept)."""
    lq01, hq01 = to_tensor(clean), to_tensor([target(c, geometry) for c in clean])
    embeds = sequence_embeds(model, lq01, hq01, [task] * len(clean))  # (B, T, llm_dim)
    if blank:
        slots, table = model.training_layout.positions(HQ), model.heads.answer_table(task)  # (N,), (N, llm_dim)
        content = embeds[:, slots] - table  # (B, N, llm_dim)
        embeds[:, slots] = content.mean((0, 1), keepdim=True) + table
    return attention_statistics(model, embeds, top, task=geometry)["copy_heads"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="checkpoints/lm4lv-smollm2")
    p.add_argument("--tasks", default="rotate,flip,demask", help="whose weights run the sequence")
    p.add_argument("--geometries", default="rotate,flip", help="whose target geometry (any task: its own)")
    p.add_argument("--modes", default="shared,own,prev", help="comma list of shared, own, prev, zero")
    p.add_argument("--scales", default="1", help="comma list of factors on the designed tables")
    p.add_argument("--blank-content", action="store_true", help="the answer tokens' content replaced by its mean")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    model = load_autoregressive(args.checkpoint, 2, "the addressing diagnostic")
    model.heads.split_answer_positions()
    _, clean = probe_images("../shared/corpus/train", "skimage", model.image_size, 1)
    shared, rows = model.heads.visual_positions.detach(), []
    for task in args.tasks.split(","):
        for geometry in args.geometries.split(","):
            for mode in args.modes.split(","):
                for scale in (float(x) for x in args.scales.split(",")):
                    with torch.no_grad():
                        table = designed_table(shared, token_sources(geometry, model.num_visual_tokens), mode)
                        model.heads.answer_positions[task].copy_(scale * table)
                    row = {"weights": task, "geometry": geometry, "table": mode, "scale": scale,
                           "blank_content": args.blank_content,
                           "heads": source_mass(model, task, geometry, clean, blank=args.blank_content)}
                    print(row, flush=True)
                    rows.append(row)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"checkpoint": args.checkpoint, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
