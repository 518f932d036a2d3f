"""LM4LV on a frozen Gemma 3 270M (the base model, pinned Q4_K_M GGUF) with `mae-tiny`.

Stage 1: all seven tasks from scratch with the interface stage 3z's chain arrived at (whitened adapters, pixel loss,
position embeddings, one adapter_in and one adapter_out per task), then each task's adapter_out refitted in closed
form on its own free-running hidden states, then Table 2 on the skimage photos (session 21: mean Delta -6.11 dB
before the refit; research/levers/gemma). Stage 2: 150 steps from it with the value carry loss at the LLM's copying
layer and KV head (found with `train.routing` on a `repeat` run: Gemma's layer 11, its one KV head; SmolLM2's layer 18,
KV head 2), predicting the reference, as SmolLM2's chain did from stage 3mv; its refit and Table 2.
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


COPYING = {"gemma3": ("11", "0"), "smollm2": ("18", "2")}  # the copying layer and its KV head (train.routing)


def chain(llm: str) -> tuple[Step, ...]:
    """Stages 1 and 2 on a frozen `llm`, each refitted and scored (also `same_budget_smollm2`'s comparison)."""
    layer, kv_head = COPYING[llm]
    carry = ("--carry-loss", "1", "--carry-layer", layer, "--carry-kv-head", kv_head, "--carry-target", "reference")
    return (
        stage("stage1", steps=600, lr="1e-3", seed=0, llm=llm),
        refit("stage1_refit", "stage1/lm4lv"),
        table2("stage1_eval", "stage1_refit"),
        stage("stage2", steps=150, lr="1e-3", seed=1, llm=llm, init="{runs}/stage1_refit", extra=carry),
        refit("stage2_refit", "stage2/lm4lv"),
        table2("stage2_eval", "stage2_refit"),
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
            ("--checkpoint", "{runs}/stage2_refit", "--to", "checkpoints/lm4lv-gemma3"),
            done="{runs}/stage2_refit/published.json",
        ),
    ),
)
