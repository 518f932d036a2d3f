"""The shipped embedded default: LM4LV on the frozen SmolLM2-135M-Instruct with `mae-tiny` (stage 3z), its whole
chain from fresh adapters. research/TRAINING-HISTORY.md has each stage as run: wall time, losses and Table 2; research/README.md
why each lever was taken.

As run, stages were sometimes stopped and resumed, or ran on another thread count; a resumed run continues exactly,
and thread counts change float sums only, so a rerun lands near (not bit for bit on) the shipped weights. The
stages ran on several machines, the LLM in bf16 where the CPU had bf16 units and fp32 where not, so the recipe pins no
dtype (`--llm-dtype` chooses one).
"""

from train.recipes import Recipe, Step, publish_run, refit_run, training_run

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
    start = ("--init-from", f"{{runs}}/{init}") if init else ()
    return training_run(name, steps, "--seed", str(seed), *BASE, *start, *flags, out=out)


def refit(name: str, source: str, *flags: str) -> Step:
    return refit_run(name, source, "--threads", "1", *flags)


def chunk(name: str, init: str, seed: int, *flags: str, steps: int = 150, refit_flags: tuple = ()) -> list[Step]:
    """One chunk of the chain: a training run from `init` and its refit ({runs}/NAME_refit)."""
    return [
        train(name, steps, seed, init, *CHUNK, *flags),
        refit(f"{name}_refit", f"{name}/lm4lv", "--tasks", "all", *refit_flags),
    ]


PART = (
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
)  # a task alone, positions frozen so that it merges back


def part(name: str, init: str, task: str, seed: int, *flags: str, batches: int = 32) -> list[Step]:
    """One task alone from `init` for 150 steps, and its refit on `batches` batches."""
    run = training_run(
        name,
        150,
        "--init-from",
        f"{{runs}}/{init}",
        "--tasks",
        task,
        "--seed",
        str(seed),
        *VISION,
        "--batch-size",
        "8",
        "--threads",
        "1",
        *PART,
        *flags,
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


STAGE3 = ("--lr", "1e-3", "--warmup", "40", "--self-condition", "0.5", "--probe-every", "100", "--save-every", "50")
RESTORATIONS = ("denoise", "deblur", "derain", "depepper", "demask")
TASKS = (*RESTORATIONS, "rotate", "flip")


def stages_3_to_3n() -> list[Step]:
    """Stage 3: 1,000 steps from fresh adapters, continued to 1,800 (3b); then the whitened chunks 3c-3e,
    self-conditioning on generated tokens (3g), position embeddings (3i-3l) and the value carry loss (3mv, 3n)."""
    return [
        train("stage3", 1000, 0, None, *STAGE3),
        train("stage3b", 1800, 0, None, *STAGE3, out="stage3"),  # the same run continued (--resume) to 1,800 steps
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
    reference = (*POSITIONS, *CARRY, "--carry-target", "reference")
    per_task = (*reference, "--task-readouts", "--lr", "3e-4")  # a readout per task, lr 3e-4, no self-conditioning
    rounds = [
        (name, seed, (*GENERATED, *reference), ())
        for name, seed in (("stage3or", 10), ("stage3pr", 11), ("stage3qr", 12), ("stage3rr", 13), ("stage3sr", 15))
    ]
    rounds += [
        (name, seed, per_task, ("--task-readouts",))
        for name, seed in (("stage3v0l", 18), ("stage3w0l", 19), ("stage3x0l", 20))
    ]
    chain, previous = [], "stage3n_refit"
    for name, seed, flags, refit_flags in rounds:
        chain += chunk(name, previous, seed, *flags, refit_flags=refit_flags)
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
    chain.append(publish_run("stage3z", "checkpoints/lm4lv-smollm2", "--vision", "../mae-tiny"))
    return chain


RECIPE = Recipe(
    name="lm4lv-smollm2",
    description="the embedded default: frozen SmolLM2-135M-Instruct + mae-tiny, stages 3-3z (checkpoints/DATA.md)",
    checkpoint="checkpoints/lm4lv-smollm2",
    steps=(*stages_3_to_3n(), *stages_3or_to_3x0l(), *stages_3y_3z()),
)
