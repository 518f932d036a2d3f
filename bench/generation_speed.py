"""Generation speed of the embedded LLM on this machine: ms per visual token with the KV cache vs the full
re-forward loop (the paper's released code), for 65 and 197 visual tokens, at several batch sizes (default 1, 8 and a
tile batch of 32), and time to first token.

    python -m bench.generation_speed [--llm gemma3] [--reforward-tokens 16] [--threads N] [--compile] [--repeats R]

The vision module here is a random ViT-MAE of the right token count (speed does not depend on its weights). The
full re-forward loop is timed over its first `--reforward-tokens` visual tokens (its cost per token grows with the
sequence, so this favours it). `--compile` adds the same KV-cached loop with the LLM under `torch.compile`
(`LM4LV.compile_llm`), timed alternately with the eager one in the same process (medians of `--repeats` runs), and the
seconds its first call took to compile.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from lm4lv_core import LM4LV
from lm4lv_core.device import LLM_DTYPES
from lm4lv_core.generate import TextPiece, VisualToken, generate
from lm4lv_core.vision import VisionConfig, VisionModule

GRIDS = {65: VisionConfig(image_size=64, patch_size=8), 197: VisionConfig(image_size=224, patch_size=16)}


def time_generation(model, lq, tasks, use_cache: bool, max_visual: int):
    """(seconds to the first event, ms per visual token over `max_visual` tokens)."""
    began = time.perf_counter()
    first, visual_started, count = None, None, 0
    for event in generate(model, lq, tasks, force_image_after=0, use_cache=use_cache):
        now = time.perf_counter()
        if first is None and isinstance(event, (TextPiece, VisualToken)):
            first = now - began
        if isinstance(event, VisualToken) and event.row == 0:
            if visual_started is None:
                visual_started = now
            else:
                count += 1
            if count >= max_visual:
                break
    return first, (time.perf_counter() - visual_started) / max(count, 1) * 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--reforward-tokens", type=int, default=16, help="visual tokens timed in the re-forward loop (0: skip it)"
    )
    p.add_argument("--llm", default=None, help="the frozen LLM (default: the embedded SmolLM2; e.g. gemma3)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--dtype", choices=["auto", *LLM_DTYPES], default="auto")
    p.add_argument("--tokens", default="65,197", help="visual-token counts to time (65: the embedded default)")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated batch sizes (32: a tile batch)")
    p.add_argument("--compile", action="store_true", help="also time the loop with the LLM under torch.compile")
    p.add_argument("--repeats", type=int, default=1, help="timed runs per row (the median is printed)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = LLM_DTYPES.get(args.dtype)  # None: auto
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"{'tokens':>6} {'batch':>5} {'dtype':>9} {'TTFT s':>7} {'KV ms/tok':>10} {'re-forward ms/tok':>18} {'speed-up':>8}"
    )
    for count in [int(c) for c in args.tokens.split(",")]:
        config = GRIDS[count]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vision = VisionModule.from_config(config, seed=0)
            model = LM4LV.build(llm=args.llm, vision=vision, device="cpu", dtype=dtype)
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            time_row(model, count, batch, vision.dim, args)


def time_row(model, count: int, batch: int, dim: int, args) -> None:
    """Print one row: KV-cached ms per step (eager, and compiled with --compile) and the re-forward loop's."""
    lq = torch.randn(batch, count, dim) * 0.6
    tasks = ["denoise"] * batch
    model.compile_llm(False)
    time_generation(model, lq, tasks, True, 4)  # warm-up
    compile_seconds = None
    if args.compile:
        model.compile_llm()
        began = time.perf_counter()
        time_generation(model, lq, tasks, True, 4)  # compiles the prompt's and the decoding step's graphs
        compile_seconds = time.perf_counter() - began
    eager, compiled, ttft = [], [], []
    for _ in range(args.repeats):
        for compiling, times in ((False, eager), (True, compiled)) if args.compile else ((False, eager),):
            model.compile_llm(compiling)
            first, kv = time_generation(model, lq, tasks, True, count - 1)
            times.append(kv)
            ttft += [first] if not compiling else []
    model.compile_llm(False)
    kv, first = statistics.median(eager), statistics.median(ttft)
    full = time_generation(model, lq, tasks, False, args.reforward_tokens)[1] if args.reforward_tokens else None
    columns = f"{full:>18.1f} {full / kv:>7.1f}x" if full else f"{'-':>18} {'-':>8}"
    print(
        f"{count:>6} {batch:>5} {str(model.llm_dtype).split('.')[-1]:>9} {first:>7.3f} {kv:>10.1f} {columns}"
        f"  ({kv / batch:.2f} ms per image-token)",
        flush=True,
    )
    if compiled:
        best = statistics.median(compiled)
        print(
            f"{'':>6} {'':>5} {'compiled':>9} {'':>7} {best:>10.1f} {'':>18} {kv / best:>7.2f}x"
            f"  ({best / batch:.2f} ms per image-token; first call {compile_seconds:.0f} s with compiling)",
            flush=True,
        )


if __name__ == "__main__":
    main()
