"""Write docs/ABLATIONS.md (and its picture grid) from the evaluation JSON of each ablation run.

    python -m train.ablation_report --runs docs/ablations --out docs/ABLATIONS.md [--reference docs/results.json]

`--runs` holds `<variant>.json` (from `train.evaluate`, with the run's `training.json`), optionally
`<variant>.probe.csv` (teacher-forced vs free-running probe), `<variant>.adapters.json` (adapter analysis) and
`examples/<variant>/<task>_{degraded,mae_r,output,clean}.png`. Every number in the report comes from these files;
an optional hand-written `NOTES.md` in the same folder is included as the discussion.
"""

from __future__ import annotations

import argparse
import csv
import json
import os

from PIL import Image, ImageDraw

ORDER = ("lm4lv", "random-llm", "vit-llm", "single-layer", "linear", "mlp", "transformer")
WHAT = {
    "lm4lv": "frozen SmolLM2, autoregressive (the paper's model)",
    "random-llm": "same architecture, random weights, frozen, autoregressive (paper 5.2)",
    "vit-llm": "frozen SmolLM2 in one pass, non-causal, no RoPE (paper 4.4)",
    "single-layer": "one frozen SmolLM2 layer, one pass, non-causal (paper B.3)",
    "linear": "no LLM: one linear layer per task, per token (paper 5.1)",
    "mlp": "no LLM: 2-layer MLP per token, ~LM4LV's trainable count (paper 5.3)",
    "transformer": "no LLM: 1-layer Transformer, ~LM4LV's trainable count (paper 5.3)",
}
# the paper's claim for each control: LM4LV does better than it
CLAIMS = {
    "linear": "a linear map of the tokens does not explain LM4LV's results (5.1)",
    "mlp": "an MLP expert with the same trainable budget does worse (5.3)",
    "transformer": "a Transformer expert with the same trainable budget does worse (5.3)",
    "random-llm": "the pretrained weights matter: a random frozen LLM does worse (5.2)",
    "vit-llm": "autoregression matters: the same LLM in one non-causal pass does worse (4.4)",
    "single-layer": "depth matters: one frozen LLM layer does worse (B.3)",
}
MARGIN_DB = 0.1  # a difference smaller than this is reported as a tie
LEARNED_DB = 3.0  # a model more than this under MAE-r has not learned the task (the bar for rotate / flip)


def load_runs(folder: str) -> dict[str, dict]:
    runs = {}
    for variant in ORDER:
        path = os.path.join(folder, f"{variant}.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            runs[variant] = json.load(f)
        probe = os.path.join(folder, f"{variant}.probe.csv")
        if os.path.isfile(probe):
            rows = list(csv.DictReader(open(probe)))
            runs[variant]["probe"] = {k: float(v) for k, v in rows[-1].items()} if rows else None
        adapters = os.path.join(folder, f"{variant}.adapters.json")
        if os.path.isfile(adapters):
            runs[variant]["adapter_analysis"] = json.load(open(adapters))
    return runs


def minutes(run: dict) -> str:
    seconds = (run.get("training") or {}).get("seconds")
    return "—" if seconds is None else f"{seconds / 60:.1f} min"


def task_table(task: str, runs: dict, reference: dict | None) -> list[str]:
    first = next(iter(runs.values()))["tasks"][task]
    lm4lv = runs.get("lm4lv", {}).get("tasks", {}).get(task, {}).get("lm4lv", {}).get("psnr")
    lines = [
        f"### {task}",
        "",
        "| model | trainable parameters | training (CPU, 1 thread) | PSNR / SSIM | minus MAE-r (dB) | "
        "minus LM4LV (dB) |",
        "|---|---|---|---|---|---|",
        f"| degraded input | — | — | {first['degraded']['psnr']:.2f} / {first['degraded']['ssim']:.3f} | "
        f"{first['degraded']['psnr'] - first['mae_r']['psnr']:+.2f} | — |",
        f"| MAE-r (baseline) | — | — | {first['mae_r']['psnr']:.2f} / {first['mae_r']['ssim']:.3f} | — | — |",
    ]
    for variant, run in runs.items():
        s = run["tasks"][task]
        out = s["lm4lv"]
        vs_lm4lv = "—" if lm4lv is None or variant == "lm4lv" else f"{out['psnr'] - lm4lv:+.2f}"
        name = f"**{variant}**" if variant == "lm4lv" else variant
        lines.append(
            f"| {name} | {run['trainable_params']:,} | {minutes(run)} | {out['psnr']:.2f} / "
            f"{out['ssim']:.3f} | {out['psnr'] - s['mae_r']['psnr']:+.2f} | {vs_lm4lv} |"
        )
    if reference and task in reference.get("tasks", {}):
        r = reference["tasks"][task]
        steps = (reference.get("training") or {}).get("steps", "?")
        lines.append(
            f"| shipped LM4LV (7 tasks, {steps} steps; reference, other budget) | "
            f"{reference.get('trainable_params', 0):,} | {minutes(reference)} | {r['lm4lv']['psnr']:.2f} / "
            f"{r['lm4lv']['ssim']:.3f} | {r['lm4lv']['psnr'] - r['mae_r']['psnr']:+.2f} | — |"
        )
    return lines + [""]


def claim_lines(runs: dict, tasks: list[str]) -> list[str]:
    if "lm4lv" not in runs:
        return ["No LM4LV run: the claims cannot be checked."]
    lines = [
        "| paper's claim | " + " | ".join(f"{t}: LM4LV minus control" for t in tasks) + " | reproduced here? |",
        "|---|" + "---|" * len(tasks) + "---|",
    ]
    for variant, claim in CLAIMS.items():
        if variant not in runs:
            continue
        cells, deltas, tested = [], [], []
        for t in tasks:
            mine, theirs = (runs[v]["tasks"][t] for v in ("lm4lv", variant))
            delta = mine["lm4lv"]["psnr"] - theirs["lm4lv"]["psnr"]
            learned = any(m["lm4lv"]["psnr"] - m["mae_r"]["psnr"] > -LEARNED_DB for m in (mine, theirs))
            deltas.append(delta)
            if learned:
                tested.append(delta)
            cells.append(f"{delta:+.2f} dB" + ("" if learned else " (neither learned it)"))
        counted = tested or deltas  # with no task learned by either model, all tasks count, and the verdict says so
        wins = sum(d > MARGIN_DB for d in counted)
        verdict = (
            "yes" if wins == len(counted) else "no" if wins == 0 else f"partly ({wins} of {len(counted)} tasks)"
        ) + ("" if tested else ", but neither model learned any of the tasks")
        lines.append(f"| {claim} | " + " | ".join(cells) + f" | {verdict} |")
    adapters = runs["lm4lv"].get("adapter_analysis")
    if adapters:
        a, r = adapters["adapters"], adapters["random_gaussian"]
        closer = a["L"] < r["L"] and a["D"] > r["D"]
        lines.append(
            f"| the adapter product is close to a scaled identity (B.1) | L(A) {a['L']:.3f} vs random "
            f"{r['L']:.3f}; D(A) {a['D']:.2f} vs random {r['D']:.2f} |"
            + " |" * (len(tasks) - 1)
            + f" {'yes' if closer and a['L'] < 0.5 else 'weakly' if closer else 'no'} |"
        )
    return lines


def probe_lines(runs: dict) -> list[str]:
    rows = [(v, r["probe"]) for v, r in runs.items() if r.get("probe")]
    if not rows:
        return []
    lines = [
        "## Teacher-forced vs free-running (held-out probe crops, last probe of each run)",
        "",
        "For the one-pass variants nothing is fed back, so both columns are the same prediction.",
        "",
        "| model | step | teacher-forced feature MSE | free-running feature MSE | teacher-forced PSNR | "
        "free-running PSNR | MAE-r PSNR | copy-input feature MSE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v, p in rows:
        lines.append(
            f"| {v} | {int(p['step'])} | {p['teacher_l2']:.4f} | {p['free_l2']:.4f} | {p['teacher_psnr']:.2f} | "
            f"{p['free_psnr']:.2f} | {p['mae_r_psnr']:.2f} | {p['copy_l2']:.4f} |"
        )
    return lines + [""]


def adapter_lines(runs: dict, folder: str, out_dir: str) -> list[str]:
    rows = [(v, r["adapter_analysis"]) for v, r in runs.items() if r.get("adapter_analysis")]
    if not rows:
        return []
    lines = [
        "## Adapter analysis (paper B.1)",
        "",
        "A = adapter_out · adapter_in (vision dim × vision dim). L(A) = min over alpha of ||A − alpha·I||² / ||A||² "
        "(0 for a scaled identity, about 1 for an unrelated matrix); D(A) = mean |diagonal| / mean |off-diagonal|. "
        "The reference is a random Gaussian matrix of the same size.",
        "",
        "| model | L(A) | D(A) | alpha | random L | random D | heat map |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, a in rows:
        heat = os.path.relpath(os.path.join(folder, "examples", v, "adapter_product.png"), out_dir)
        lines.append(
            f"| {v} | {a['adapters']['L']:.3f} | {a['adapters']['D']:.2f} | {a['adapters']['alpha']:.3f} | "
            f"{a['random_gaussian']['L']:.3f} | {a['random_gaussian']['D']:.2f} | [png]({heat}) |"
        )
    return lines + [""]


def save_grid(runs: dict, folder: str, tasks: list[str], path: str, scale: int = 2) -> bool:
    variants = list(runs)
    columns = ["degraded", "MAE-r"] + variants + ["clean"]
    cells = {}
    for task in tasks:
        first = os.path.join(folder, "examples", variants[0])
        row = [os.path.join(first, f"{task}_degraded.png"), os.path.join(first, f"{task}_mae_r.png")]
        row += [os.path.join(folder, "examples", v, f"{task}_output.png") for v in variants]
        row += [os.path.join(first, f"{task}_clean.png")]
        if not all(os.path.isfile(p) for p in row):
            return False
        cells[task] = [Image.open(p).convert("RGB") for p in row]
    w, h = (d * scale for d in cells[tasks[0]][0].size)
    pad, label_w, head = 4, 60, 18
    canvas = Image.new("RGB", (label_w + len(columns) * (w + pad), head + len(tasks) * (h + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for c, name in enumerate(columns):
        draw.text((label_w + c * (w + pad) + 2, 3), name[:20], fill="black")
    for r, task in enumerate(tasks):
        y = head + r * (h + pad)
        draw.text((4, y + h // 2 - 6), task, fill="black")
        for c, image in enumerate(cells[task]):
            canvas.paste(image.resize((w, h), Image.Resampling.NEAREST), (label_w + c * (w + pad), y))
    canvas.save(path)
    return True


def frozen_constraint_lines(folder: str) -> list[str]:
    """The `lm4lv-lora` control: pairs `NAME.frozen.json` / `NAME.lora.json` (evaluation JSON of the same recipe,
    start, seed and budget, with and without LoRA) in `folder/frozen_constraint/`."""
    pair_dir = os.path.join(folder, "frozen_constraint")
    names = sorted({f.split(".")[0] for f in os.listdir(pair_dir)} if os.path.isdir(pair_dir) else [])
    rows = []
    for name in names:
        paths = [os.path.join(pair_dir, f"{name}.{kind}.json") for kind in ("frozen", "lora")]
        if not all(os.path.isfile(p) for p in paths):
            continue
        frozen, lora = (json.load(open(p)) for p in paths)
        training = lora.get("training") or {}
        for task, scores in lora["tasks"].items():
            f_out, l_out, mae_r = frozen["tasks"][task]["lm4lv"], scores["lm4lv"], scores["mae_r"]
            rows.append(
                f"| {task} | {training.get('steps')} steps from `{training.get('init_from')}` "
                f"| {frozen['trainable_params']:,} / {lora['trainable_params']:,} "
                f"| {f_out['psnr']:.2f} / {f_out['ssim']:.3f} | {l_out['psnr']:.2f} / {l_out['ssim']:.3f} "
                f"| {l_out['psnr'] - f_out['psnr']:+.2f} | {mae_r['psnr']:.2f} / {mae_r['ssim']:.3f} |"
            )
    if not rows:
        return []
    return [
        "## What the frozen constraint costs: the `lm4lv-lora` control",
        "",
        "**LLM adapted with LoRA: not frozen.** `--variant lm4lv-lora --lora-rank 8` adds LoRA (peft, rank 8, "
        "alpha 16) on the LLM's q/k/v/o projections to the same model, trained with the adapters and task tokens. "
        "Each row: the same recipe, start, data, seed and budget with and without LoRA, then the same "
        "free-running refit of adapter_out; free-running PSNR / SSIM on the evaluation photos "
        "(`python -m train.evaluate`). Evaluation JSON in `" + pair_dir + "`.",
        "",
        "| task | run | trainable (frozen / LoRA) | frozen LLM | LoRA | LoRA minus frozen (dB) | MAE-r |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def setup_lines(runs: dict, folder: str, out: str, tasks: list[str]) -> list[str]:
    """The report's title and setup section (data, budget, evaluation, variants), from the runs' records."""
    first = next(iter(runs.values()))
    autoregressive = [r for v, r in runs.items() if v in ("lm4lv", "random-llm")]
    training = (autoregressive[0] if autoregressive else first).get("training") or {}
    return [
        "# Ablations: is it the LLM doing the work?",
        "",
        f"Generated by `python -m train.ablation_report --runs {folder} --out {out}` from the evaluation JSON of "
        "each run (made by `python -m train.ablations`); do not edit by hand.",
        "",
        "## Setup",
        "",
        f"- Every model was trained on the same data (`{training.get('data')}`, {first['size']} px crops), tasks "
        f"({', '.join(training.get('tasks', tasks))}, sampled uniformly), seed ({training.get('seed')}), budget "
        f"({training.get('steps')} steps of batch {training.get('batch_size')} = {training.get('samples')} "
        f"samples), AdamW lr {training.get('lr')} with warm-up and cosine decay, on the same frozen MAE "
        f"(`{training.get('vision')}`) and LLM (`{training.get('llm')}`); the autoregressive models with "
        "self-conditioning "
        f"{training.get('self_condition')}; adapter_out ridge-initialised where the model has one. Training "
        "times are wall times with one CPU thread per run while two to four jobs shared the 2-core machine: compare "
        "them as orders of magnitude.",
        f"- Evaluation: `python -m train.evaluate` on {first['images']} scikit-image photos "
        f"({', '.join(first.get('image_names', []))}) at {first['size']} px, same degradation seeds for every "
        "model; autoregressive models start their answer with `<Img>`.",
        "- Variants: " + "; ".join(f"`{v}`: {WHAT[v]}" for v in runs) + ".",
        "- Text cross-entropy weight of the autoregressive models: "
        + ", ".join(
            f"`{v}` {(r.get('training') or {}).get('ce_weight', 1.0):g}"
            for v, r in runs.items()
            if v in ("lm4lv", "random-llm")
        )
        + " (the one-pass models write no text).",
        "",
    ]


def render(
    runs: dict, folder: str, out: str, reference: dict | None, grid: str | None, notes: str | None = None
) -> str:
    first = next(iter(runs.values()))
    tasks = list(first["tasks"])
    for variant, run in runs.items():  # the same images, degradations and MAE-r for every run, or no comparison
        for t in tasks:
            if abs(run["tasks"][t]["mae_r"]["psnr"] - first["tasks"][t]["mae_r"]["psnr"]) > 1e-6:
                raise SystemExit(f"{variant}: MAE-r differs from the other runs on {t}: not the same evaluation.")
    out_dir = os.path.dirname(os.path.abspath(out))
    lines = setup_lines(runs, folder, out, tasks) + ["## Results", ""]
    for task in tasks:
        lines += task_table(task, runs, reference)
    if grid and save_grid(runs, folder, tasks, grid):
        lines += [
            f"![outputs of every model]({os.path.relpath(grid, out_dir)})",
            "",
            "One row per task (first evaluation photo): degraded, MAE-r, each model's output, clean.",
            "",
        ]
    lines += [
        "## The paper's claims at our scale",
        "",
        f"A control counts as beaten when LM4LV's PSNR is higher by more than {MARGIN_DB} dB. A task where both "
        f"models are more than {LEARNED_DB:g} dB under MAE-r (neither learned it) is left out of the verdict "
        "unless neither model learned any task.",
        "",
    ]
    lines += claim_lines(runs, tasks) + [""]
    lines += frozen_constraint_lines(folder)
    if notes:
        lines += [
            "## Reading the results",
            "",
            "*(hand-written, from `NOTES.md` next to the run JSONs)*",
            "",
            notes.strip(),
            "",
        ]
    lines += probe_lines(runs)
    lines += adapter_lines(runs, folder, out_dir)
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="docs/ablations", help="folder with <variant>.json files")
    p.add_argument("--out", default="docs/ABLATIONS.md")
    p.add_argument("--grid", default=None, help="picture grid (default: next to --out, ablations.png)")
    p.add_argument("--reference", default=None, help="evaluation JSON of the shipped model, listed for reference")
    args = p.parse_args(argv)
    runs = load_runs(args.runs)
    if not runs:
        raise SystemExit(f"No <variant>.json in {args.runs}: run `python -m train.ablations` first.")
    reference = json.load(open(args.reference)) if args.reference else None
    grid = args.grid or os.path.join(os.path.dirname(os.path.abspath(args.out)), "ablations.png")
    notes_path = os.path.join(args.runs, "NOTES.md")
    notes = open(notes_path).read() if os.path.isfile(notes_path) else None
    text = render(runs, args.runs, args.out, reference, grid, notes)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
