"""Train and evaluate LM4LV and the paper's controls on the same data, seeds and budget, then write the report.

    python -m train.ablations --out runs/ablations --tasks denoise,rotate --steps 500 --jobs 2
    python -m train.ablation_report --runs docs/ablations --out docs/ABLATIONS.md   # (run by the line above)

Every variant runs `python -m train.train_lm4lv --variant V` with the same flags (data, seed, steps, batch size,
learning rate, schedule, ridge initialisation of adapter_out where there is one, self-conditioning where there is
feedback) and then `python -m train.evaluate` on the scikit-image photos. Runs resume: a killed call continues
where each run stopped, and finished runs are not repeated. The evaluation JSONs and example outputs are copied to
`--results` (default docs/ablations) and the report is generated from them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from lm4lv_core.variants import AUTOREGRESSIVE_VARIANTS, VARIANTS

ADAPTER_VARIANTS = ("lm4lv", "random-llm", "vit-llm", "single-layer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/ablations", help="folder of the runs (one subfolder per variant)")
    p.add_argument("--results", default="docs/ablations", help="where evaluation JSONs and examples are collected")
    p.add_argument("--report", default="docs/ABLATIONS.md", help="the generated report")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variants")
    p.add_argument("--tasks", default="denoise,rotate", help="tasks trained together and evaluated")
    p.add_argument("--vision", default="checkpoints/mae-tiny", help="the frozen vision module")
    p.add_argument("--llm", default=None, help="the frozen LLM (default: embedded SmolLM2)")
    p.add_argument("--data", default="../shared/corpus/train", help="training images")
    p.add_argument("--images", default="skimage", help="evaluation images (see train.evaluate)")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=25)
    p.add_argument("--self-condition", type=float, default=0.5, help="for the autoregressive variants")
    p.add_argument(
        "--random-llm-ce-weight",
        type=float,
        default=0.0,
        help="text CE weight of the random-llm control: a random LLM cannot learn to write the markers (its "
        "CE stays near 6 and, under gradient clipping, crowds out the regression), and evaluation "
        "forces `<Img>`, so by default it trains on the regression alone",
    )
    p.add_argument("--layer", type=int, default=None, help="single-layer: LLM layer (default: the middle one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="variants trained at once (one CPU thread each)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per job")
    p.add_argument(
        "--reference",
        default="docs/results.json",
        help="evaluation JSON of the shipped model, listed for reference in the report (if it exists)",
    )
    return p.parse_args(argv)


def train_command(args, variant: str) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "train.train_lm4lv",
        "--variant",
        variant,
        "--vision",
        args.vision,
        "--data",
        args.data,
        "--out",
        os.path.join(args.out, variant),
        "--tasks",
        args.tasks,
        "--steps",
        str(args.steps),
        "--batch-size",
        str(args.batch_size),
        "--lr",
        str(args.lr),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
        "--save-every",
        "50",
        "--probe-every",
        "100",
        "--threads",
        str(args.threads),
        "--resume",
    ]
    if variant in AUTOREGRESSIVE_VARIANTS:
        cmd += ["--self-condition", str(args.self_condition)]
    if variant == "random-llm":
        cmd += ["--ce-weight", str(args.random_llm_ce_weight)]
    if args.llm:
        cmd += ["--llm", args.llm]
    if variant == "single-layer" and args.layer is not None:
        cmd += ["--layer", str(args.layer)]
    return cmd


def evaluate_command(args, variant: str) -> list[str]:
    run = os.path.join(args.out, variant)
    cmd = [
        sys.executable,
        "-m",
        "train.evaluate",
        "--images",
        args.images,
        "--tasks",
        args.tasks,
        "--checkpoint",
        os.path.join(run, "lm4lv"),
        "--json",
        os.path.join(run, "eval.json"),
        "--examples",
        os.path.join(run, "examples"),
        "--seed",
        str(args.seed),
    ]
    return cmd + (["--llm", args.llm] if args.llm else [])


def finished(args, variant: str) -> bool:
    import json

    record = os.path.join(args.out, variant, "lm4lv", "training.json")
    return os.path.isfile(record) and json.load(open(record))["steps"] >= args.steps


def run_variant(args, variant: str) -> str:
    run = os.path.join(args.out, variant)
    os.makedirs(run, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TQDM_MININTERVAL="30")
    began = time.time()
    with open(os.path.join(run, "stdout.log"), "a") as log:
        if not finished(args, variant):
            subprocess.run(train_command(args, variant), stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
        subprocess.run(evaluate_command(args, variant), stdout=log, stderr=subprocess.STDOUT, env=env, check=True)
    target = os.path.join(args.results, variant)
    os.makedirs(args.results, exist_ok=True)
    shutil.copy(os.path.join(run, "eval.json"), target + ".json")
    for name in ("probe.csv",):
        if os.path.isfile(os.path.join(run, name)):
            shutil.copy(os.path.join(run, name), f"{target}.{name}")
    shutil.copytree(os.path.join(run, "examples"), os.path.join(args.results, "examples", variant), dirs_exist_ok=True)
    if variant in ADAPTER_VARIANTS:  # paper B.1: is adapter_out @ adapter_in a scaled identity?
        subprocess.run(
            [
                sys.executable,
                "-m",
                "train.analyze_adapters",
                "--checkpoint",
                os.path.join(run, "lm4lv"),
                "--json",
                f"{target}.adapters.json",
                "--heatmap",
                os.path.join(args.results, "examples", variant, "adapter_product.png"),
            ],
            env=env,
            check=True,
        )
    return f"{variant}: done in {time.time() - began:.0f} s"


def run_safely(args, variant: str) -> str:
    try:
        return run_variant(args, variant)
    except subprocess.CalledProcessError as exc:
        return f"{variant}: FAILED ({exc}); see {os.path.join(args.out, variant, 'stdout.log')}"


def main(argv=None):
    args = parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"Unknown variant(s) {unknown}; choose from {VARIANTS}.")
    # the slow (autoregressive) runs first, so that the cheap ones fill the other job slot
    variants.sort(key=lambda v: v not in AUTOREGRESSIVE_VARIANTS)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for message in pool.map(lambda v: run_safely(args, v), variants):
            print(message, flush=True)
    reference = ["--reference", args.reference] if os.path.isfile(args.reference) else []
    subprocess.run(
        [sys.executable, "-m", "train.ablation_report", "--runs", args.results, "--out", args.report] + reference,
        check=True,
    )


if __name__ == "__main__":
    main()
