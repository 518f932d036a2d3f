"""The LoRA control `lm4lv-smollm2-lora` (the LLM adapted with LoRA: not frozen): from stage 3c of `lm4lv-smollm2`
(run that recipe to its step stage3c_refit first), LoRA r 8 on SmolLM2's q/k/v/o trained with the adapters and task
tokens for 150 steps, then the free-running refit of adapter_out. As run: research/TRAINING-HISTORY.md, *Stage 4*."""

from train.recipes import Recipe, publish_run, refit_run, training_run

START = "runs/recipes/lm4lv-smollm2/stage3c_refit"

RECIPE = Recipe(
    name="lm4lv-smollm2-lora",
    description="the LoRA control (LLM not frozen): stage 3c + LoRA r 8, 150 steps, refit",
    checkpoint="checkpoints/lm4lv-smollm2-lora",
    steps=(
        training_run(
            "lora",
            150,
            "--vision",
            "checkpoints/mae-tiny",
            "--init-from",
            START,
            "--variant",
            "lm4lv-lora",
            "--lora-rank",
            "8",
            "--tasks",
            "all",
            "--whiten",
            "1e-4",
            "--pixel-loss",
            "1",
            "--batch-size",
            "8",
            "--lr",
            "1e-3",
            "--warmup",
            "10",
            "--self-condition",
            "0.5",
            "--probe-every",
            "0",
            "--save-every",
            "25",
            "--threads",
            "2",
        ),
        refit_run("lora_refit", "lora/lm4lv", "--threads", "2"),
        publish_run("lora_refit", "checkpoints/lm4lv-smollm2-lora", "--vision", "../mae-tiny"),
    ),
)
