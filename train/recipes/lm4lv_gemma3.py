"""LM4LV on a frozen Gemma 3 270M (the base model, pinned Q4_K_M GGUF) with `mae-tiny`.

Stage 1: all seven tasks from scratch with the interface stage 3z's chain arrived at (whitened adapters, pixel loss,
position embeddings, one adapter_in and one adapter_out per task), then each task's adapter_out refitted in closed
form on its own free-running hidden states, then Table 2 on the skimage photos.
"""

from train.recipes import Recipe, Step

VISION = "checkpoints/mae-tiny"
COMMON = (
    "--vision",
    VISION,
    "--whiten",
    "1e-4",
    "--pixel-loss",
    "1",
    "--batch-size",
    "8",
    "--position-embeddings",
    "--task-readouts",
    "--task-input-adapters",
    "--probe-every",
    "0",
    "--save-every",
    "25",
    "--threads",
    "1",
)


def stage(
    name: str, steps: int, lr: str, seed: int, llm: str = "gemma3", init: str | None = None, extra: tuple[str, ...] = ()
) -> Step:
    init_args = ("--init-from", init) if init else ()
    return Step(
        name,
        "train.train_lm4lv",
        (
            "--out",
            f"{{runs}}/{name}",
            "--llm",
            llm,
            "--tasks",
            "all",
            "--steps",
            str(steps),
            "--lr",
            lr,
            "--warmup",
            "10",
            "--position-lr-scale",
            "30",
            "--seed",
            str(seed),
            *COMMON,
            *init_args,
            *extra,
        ),
        done=f"{{runs}}/{name}/lm4lv/training.json",
        resumable=True,
        done_steps=steps,
    )


def refit(name: str, source: str, batches: int = 8) -> Step:
    return Step(
        name,
        "train.refit_readout",
        (
            "--checkpoint",
            f"{{runs}}/{source}",
            "--out",
            f"{{runs}}/{name}",
            "--tasks",
            "all",
            "--inputs",
            "free",
            "--rounds",
            "2",
            "--task-readouts",
            "--batches",
            str(batches),
            "--threads",
            "1",
        ),
        done=f"{{runs}}/{name}/refit.json",
    )


def table2(name: str, checkpoint: str) -> Step:
    return Step(
        name,
        "train.evaluate",
        (
            "--checkpoint",
            f"{{runs}}/{checkpoint}",
            "--images",
            "skimage",
            "--tasks",
            "all",
            "--json",
            f"{{runs}}/{name}.json",
            "--markdown",
            f"{{runs}}/{name}.md",
            "--grid",
            f"{{runs}}/{name}.png",
        ),
        done=f"{{runs}}/{name}.json",
    )


def chain(llm: str) -> tuple[Step, ...]:
    """Stage 1 on a frozen `llm`, its refit and Table 2 (also the same-budget comparison of `same_budget_smollm2`)."""
    return (
        stage("stage1", steps=600, lr="1e-3", seed=0, llm=llm),
        refit("stage1_refit", "stage1/lm4lv"),
        table2("stage1_eval", "stage1_refit"),
    )


RECIPE = Recipe(
    name="lm4lv-gemma3",
    description="frozen Gemma 3 270M + mae-tiny, all tasks, per-task adapters, refit, Table 2",
    checkpoint="checkpoints/lm4lv-gemma3",
    steps=(
        *chain("gemma3"),
        Step(
            "publish",
            "train.publish",
            ("--checkpoint", "{runs}/stage1_refit", "--to", "checkpoints/lm4lv-gemma3"),
            done="{runs}/stage1_refit/published.json",
        ),
    ),
)
