"""The shipped embedded default: LM4LV on the frozen SmolLM2-135M-Instruct with `mae-tiny` (stage 3z), its whole
chain from fresh adapters. research/TRAINING-HISTORY.md has each stage as run: wall time, losses and Table 2; research/README.md
why each lever was taken.

As run, stages were sometimes stopped and resumed, or ran on another thread count; a resumed run continues exactly,
and thread counts change float sums only, so a rerun lands near (not bit for bit on) the shipped weights.
"""

from train.recipes import Recipe, Step

VISION = ("--vision", "checkpoints/mae-tiny")
BASE = (*VISION, "--tasks", "all", "--batch-size", "8", "--threads", "1")
CHUNK = (
    "--whiten",
    "1e-4",
    "--pixel-loss",
    "1",
    "--lr",
    "1e-3",
    "--warmup",
    "10",
    "--probe-every",
    "0",
    "--save-every",
    "25",
)  # stage 3c's recipe, the base of every later chunk
GENERATED = ("--self-condition", "0.5", "--self-condition-inputs", "generated")
POSITIONS = ("--position-embeddings", "--position-lr-scale", "30")
CARRY = ("--carry-loss", "1", "--carry-layer", "18", "--carry-kv-head", "2")  # SmolLM2's copying layer and KV head


def train(name: str, steps: int, seed: int, init: str | None, *flags: str, out: str | None = None) -> Step:
    """A training run of `steps` into {runs}/NAME (or `out`), from the checkpoint `init` ({runs}-relative)."""
    out = out or name
    start = ("--init-from", f"{{runs}}/{init}") if init else ()
    return Step(
        name,
        "train.train_lm4lv",
        ("--out", f"{{runs}}/{out}", "--steps", str(steps), "--seed", str(seed), *BASE, *start, *flags),
        done=f"{{runs}}/{out}/lm4lv/training.json",
        resumable=True,
        done_steps=steps,
    )


def refit(name: str, source: str, *flags: str) -> Step:
    """adapter_out refitted in closed form on free-running hidden states (2 rounds) into {runs}/NAME."""
    return Step(
        name,
        "train.refit_readout",
        (
            "--checkpoint",
            f"{{runs}}/{source}",
            "--out",
            f"{{runs}}/{name}",
            "--inputs",
            "free",
            "--rounds",
            "2",
            "--threads",
            "1",
            *flags,
        ),
        done=f"{{runs}}/{name}/refit.json",
    )


def chunk(name: str, init: str, seed: int, *flags: str, steps: int = 150, refit_flags: tuple = ()) -> list[Step]:
    """One chunk of the chain: a training run from `init` and its refit ({runs}/NAME_refit)."""
    return [
        train(name, steps, seed, init, *CHUNK, *flags),
        refit(f"{name}_refit", f"{name}/lm4lv", "--tasks", "all", *refit_flags),
    ]


def part(name: str, init: str, task: str, seed: int, *flags: str, batches: int = 32) -> list[Step]:
    """One task alone from `init` (positions frozen, so that it merges back), and its refit on `batches` batches."""
    run = Step(
        name,
        "train.train_lm4lv",
        (
            "--out",
            f"{{runs}}/{name}",
            "--init-from",
            f"{{runs}}/{init}",
            "--tasks",
            task,
            "--steps",
            "150",
            "--seed",
            str(seed),
            *VISION,
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--whiten",
            "1e-4",
            "--pixel-loss",
            "1",
            "--lr",
            "3e-4",
            "--warmup",
            "10",
            "--probe-every",
            "0",
            "--save-every",
            "25",
            "--position-embeddings",
            "--position-lr-scale",
            "0",
            *CARRY,
            "--carry-target",
            "reference",
            "--task-readouts",
            *flags,
        ),
        done=f"{{runs}}/{name}/lm4lv/training.json",
        resumable=True,
        done_steps=150,
    )
    return [run, refit(f"{name}_refit", f"{name}/lm4lv", "--tasks", task, "--task-readouts", "--batches", str(batches))]


def merge(name: str, base: str, parts: list[str]) -> Step:
    return Step(
        name,
        "train.merge_tasks",
        (
            "--base",
            f"{{runs}}/{base}",
            *[a for p in parts for a in ("--part", f"{{runs}}/{p}")],
            "--out",
            f"{{runs}}/{name}",
        ),
        done=f"{{runs}}/{name}/merge.json",
    )


RESTORATIONS = ("denoise", "deblur", "derain", "depepper", "demask")
TASKS = (*RESTORATIONS, "rotate", "flip")


def stages_3_to_3n() -> list[Step]:
    """Stage 3: 1,000 steps from fresh adapters, continued to 1,800 (3b); then the whitened chunks 3c-3e,
    self-conditioning on generated tokens (3g), position embeddings (3i-3l) and the value carry loss (3mv, 3n)."""
    return [
        train(
            "stage3",
            1000,
            0,
            None,
            "--lr",
            "1e-3",
            "--warmup",
            "40",
            "--self-condition",
            "0.5",
            "--probe-every",
            "100",
            "--save-every",
            "50",
            out="stage3",
        ),
        Step(
            "stage3b",
            "train.train_lm4lv",
            (
                "--out",
                "{runs}/stage3",
                "--steps",
                "1800",
                "--seed",
                "0",
                *BASE,
                "--lr",
                "1e-3",
                "--warmup",
                "40",
                "--self-condition",
                "0.5",
                "--probe-every",
                "100",
                "--save-every",
                "50",
                "--resume",
            ),
            done="{runs}/stage3/lm4lv/training.json",
            done_steps=1800,
        ),
        *chunk("stage3c", "stage3/lm4lv", 0, "--self-condition", "0.5", steps=300),
        *chunk("stage3d", "stage3c_refit", 0, "--self-condition", "0.5", steps=500),
        *chunk("stage3e", "stage3d_refit", 0, "--self-condition", "0.5", steps=500),
        *chunk("stage3g", "stage3e_refit", 3, *GENERATED, steps=500),
        *chunk("stage3i", "stage3g_refit", 4, *GENERATED, "--position-embeddings", "--position-lr-scale", "10"),
        *chunk("stage3j", "stage3i_refit", 5, *GENERATED, "--position-embeddings", "--position-lr-scale", "10"),
        *chunk("stage3k", "stage3j_refit", 6, *GENERATED, *POSITIONS),
        *chunk("stage3l", "stage3k_refit", 7, *GENERATED, *POSITIONS),
        *chunk("stage3mv", "stage3l_refit", 8, *GENERATED, *POSITIONS, *CARRY),
        *chunk("stage3n", "stage3mv_refit", 9, *GENERATED, *POSITIONS, *CARRY),
    ]


def stages_3or_to_3x0l() -> list[Step]:
    """The carry probe predicting the reference (3or-3sr), then a readout per task at lr 3e-4 (3v0l-3x0l)."""
    chain, previous = [], "stage3n_refit"
    for name, seed in (("stage3or", 10), ("stage3pr", 11), ("stage3qr", 12), ("stage3rr", 13), ("stage3sr", 15)):
        chain += chunk(name, previous, seed, *GENERATED, *POSITIONS, *CARRY, "--carry-target", "reference")
        previous = f"{name}_refit"
    # 3v0l-3x0l: a readout per task (split from the shared one), lr 3e-4, no self-conditioning
    for name, seed in (("stage3v0l", 18), ("stage3w0l", 19), ("stage3x0l", 20)):
        chain += chunk(
            name,
            previous,
            seed,
            *POSITIONS,
            *CARRY,
            "--carry-target",
            "reference",
            "--task-readouts",
            "--lr",
            "3e-4",
            refit_flags=("--task-readouts",),
        )
        previous = f"{name}_refit"
    return chain


def stages_3y_3z() -> list[Step]:
    """3y: each task alone from 3x0l (its own adapter_in too), merged; 3z: two more rounds of the restorations (derain
    three) from 3y, merged, and published."""
    chain = [s for t in TASKS for s in part(f"part1_{t}", "stage3x0l_refit", t, 21, batches=8)]
    chain.append(merge("stage3y", "stage3x0l_refit", [f"part1_{t}_refit" for t in TASKS]))
    chain += [s for t in RESTORATIONS for s in part(f"part2_{t}", "stage3y", t, 22, "--task-input-adapters")]
    chain += [s for t in RESTORATIONS for s in part(f"part3_{t}", f"part2_{t}_refit", t, 23, "--task-input-adapters")]
    chain += part("part4_derain", "part3_derain_refit", "derain", 24, "--task-input-adapters")
    last = {t: f"part3_{t}_refit" for t in RESTORATIONS} | {"derain": "part4_derain_refit"}
    chain.append(merge("stage3z", "stage3y", [last[t] for t in RESTORATIONS]))  # rotate and flip keep stage 3y's
    chain.append(
        Step(
            "publish",
            "train.publish",
            ("--checkpoint", "{runs}/stage3z", "--to", "checkpoints/lm4lv-smollm2", "--vision", "../mae-tiny"),
            done="{runs}/stage3z/published.json",
        )
    )
    return chain


RECIPE = Recipe(
    name="lm4lv-smollm2",
    description="the embedded default: frozen SmolLM2-135M-Instruct + mae-tiny, stages 3-3z (checkpoints/DATA.md)",
    checkpoint="checkpoints/lm4lv-smollm2",
    steps=(*stages_3_to_3n(), *stages_3or_to_3x0l(), *stages_3y_3z()),
)
