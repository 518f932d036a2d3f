"""The shipped vision module `mae-tiny` (ViT-MAE, 64 px, patch 8): MAE pretraining, decoder fine-tuning (L1, then
with latent noise), then the decoder replaced by the least-squares linear readout of the encoder features (stage 2c:
MAE-r 28.9 dB on the evaluation photos). Wall times and losses: research/TRAINING-HISTORY.md.

As run, stage 2b was stopped (SIGTERM, saved) at step 2,496 of its 3,000-step schedule; this recipe runs it to the
end. Stage 2c leaves the encoder untouched, so LM4LV checkpoints trained on the shipped module load on a rerun only
if its encoder matches (their fingerprint check says so in one sentence).
"""

from train.recipes import Recipe, Step, publish_run

DATA = ("--data", "../shared/corpus/train", "--threads", "1")


def run(name: str, module: str, steps: int, *flags: str) -> Step:
    """A run of `steps` into {runs}/NAME; done when its saved state records them (0 steps: when it wrote its module)."""
    args = ("--out", f"{{runs}}/{name}", "--steps", str(steps), *DATA, *flags)
    if steps == 0:
        return Step(name, module, args, done=f"{{runs}}/{name}/vision/config.json")
    return Step(name, module, args, done=f"{{runs}}/{name}/state/state.json", resumable=True, done_steps=steps)


RECIPE = Recipe(
    name="mae-tiny",
    description="the vision module: MAE pretraining, decoder fine-tuning, least-squares readout decoder",
    checkpoint="checkpoints/mae-tiny",
    steps=(
        run("stage1", "train.pretrain_mae", 2400, "--save-every", "200"),
        run("stage2", "train.finetune_mae_decoder", 2000, "--vision", "{runs}/stage1/vision", "--save-every", "200"),
        run(
            "stage2b",
            "train.finetune_mae_decoder",
            3000,
            "--vision",
            "{runs}/stage2/vision",
            "--latent-noise",
            "0.05",
            "--lr",
            "3e-4",
            "--warmup",
            "20",
            "--seed",
            "1",
            "--save-every",
            "200",
        ),
        run(
            "stage2c",
            "train.finetune_mae_decoder",
            0,
            "--vision",
            "{runs}/stage2b/vision",
            "--init-readout",
            "16",
            "--readout-ridge",
            "1e-5",
        ),
        publish_run("stage2c/vision", "checkpoints/mae-tiny", "--vision-module"),
    ),
)
