"""LM4LV on a frozen Gemma 3 270M (the base model, pinned Q4_K_M GGUF) with `mae-tiny`.

Stage 0: the copy first, `repeat` alone with shared adapters (Gemma forms its copying head on `repeat` but not in 600
all-task steps): 450 steps, then that run continued in its folder to 3,000 (stage0_long; its learning rate follows the
longer total's cosine from step 450). Stage 1: 600 steps on all seven tasks from it, with the interface stage 3z's
chain arrived at (whitened adapters, pixel loss, position embeddings, one adapter_in and one adapter_out per task:
stage 0's shared ones split per task), then each task's adapter_out refitted in closed form on its own free-running
hidden states (4 batches), then Table 2 on the skimage photos: mean Delta of the five restorations -0.73 dB (stage 3z's
SmolLM2: -0.96). `chain()`'s stage 2 (150 steps with the value carry loss at the copying layer, its refit) is left out:
from this stage 1 it ended at -0.82. Table 7's budget (`chain(llm)`: 450 `repeat` + 150 all-task steps, stage 2) gives
-3.25 on Gemma and -3.21 on SmolLM2 (`same_budget_smollm2`); research/levers/gemma, *Teach the copy first* to *The
all-task chain from the 3,000-step copy*.
"""

from train.recipes import Recipe, Step, publish_run, refit_run, table2_run, training_run

COMMON = (
    "--vision",
    "checkpoints/mae-tiny",
    "--whiten",
    "1e-4",
    "--pixel-loss",
    "1",
    "--batch-size",
    "8",
    "--position-embeddings",
    "--probe-every",
    "0",
    "--save-every",
    "25",
    "--threads",
    "1",
)
PER_TASK = ("--task-readouts", "--task-input-adapters")  # one adapter_in and one adapter_out per task
STAGE1_STEPS = 600  # stage 0 and stage 1 together (Table 7's budget)
COPYING = {"gemma3": ("11", "0"), "smollm2": ("18", "2")}  # the copying layer and its KV head (train.routing)


def stage(name: str, steps: int, seed: int, llm: str, *extra: str, tasks: str = "all", out: str | None = None) -> Step:
    """`tasks` for `steps` on the frozen `llm` (lr 1e-3, 10 warm-up steps, positions at 30x), into {runs}/OUT
    (default NAME; a folder already trained to fewer steps is continued to `steps`)."""
    return training_run(
        name,
        steps,
        "--llm",
        llm,
        "--tasks",
        tasks,
        "--lr",
        "1e-3",
        "--warmup",
        "10",
        "--position-lr-scale",
        "30",
        "--seed",
        str(seed),
        *COMMON,
        *extra,
        out=out,
    )


def refit(name: str, source: str, batches: int = 8) -> Step:
    """Each task's adapter_out refitted on `batches` batches of 16 of its own free-running hidden states."""
    return refit_run(name, source, "--tasks", "all", "--task-readouts", "--batches", str(batches), "--threads", "1")


def chain(
    llm: str,
    copy_steps: int = 450,
    copy_continued_to: int | None = None,
    stage1_steps: int | None = None,
    stage1_refit_batches: int = 8,
    with_stage2: bool = True,
) -> tuple[Step, ...]:
    """Stage 0 (the copy: `copy_steps` of stage 1's 600 steps on `repeat`, shared adapters; with `copy_continued_to`,
    that run continued in its folder to this longer total) and stages 1 and 2 on a frozen `llm`, each of 1 and 2
    refitted and scored (also `same_budget_smollm2`'s comparison). Stage 1 takes `stage1_steps` (default: the rest of
    Table 7's 600) and its refit `stage1_refit_batches` batches of 16 per task; `with_stage2=False` ends at stage 1's
    Table 2."""
    layer, kv_head = COPYING[llm]
    carry = ("--carry-loss", "1", "--carry-layer", layer, "--carry-kv-head", kv_head, "--carry-target", "reference")
    copy = [stage("stage0", copy_steps, 0, llm, tasks="repeat")]
    if copy_continued_to is not None:
        copy.append(stage("stage0_long", copy_continued_to, 0, llm, tasks="repeat", out="stage0"))
    stage1 = (
        stage(
            "stage1", stage1_steps or STAGE1_STEPS - copy_steps, 0, llm, *PER_TASK, "--init-from", "{runs}/stage0/lm4lv"
        ),
        refit("stage1_refit", "stage1/lm4lv", batches=stage1_refit_batches),
        table2_run("stage1_eval", "stage1_refit"),
    )
    stage2 = (
        stage("stage2", 150, 1, llm, *PER_TASK, "--init-from", "{runs}/stage1_refit", *carry),
        refit("stage2_refit", "stage2/lm4lv", batches=4),  # half of stage 1's (an hour on one CPU thread)
        table2_run("stage2_eval", "stage2_refit"),
    )
    return (*copy, *stage1, *(stage2 if with_stage2 else ()))


RECIPE = Recipe(
    name="lm4lv-gemma3",
    description="frozen Gemma 3 270M + mae-tiny: 3,000 steps of the copy on repeat, 600 on all tasks, per-task adapters, refit, Table 2",
    checkpoint="checkpoints/lm4lv-gemma3",
    steps=(
        *chain("gemma3", copy_continued_to=3000, stage1_steps=600, stage1_refit_batches=4, with_stage2=False),
        publish_run("stage1_refit", "checkpoints/lm4lv-gemma3"),
    ),
    llm_dtype="fp32",  # as every stage ran (LM4LV_DTYPE=fp32 on the machines with bf16 units); Table 7's SmolLM2 row pins the same
)
