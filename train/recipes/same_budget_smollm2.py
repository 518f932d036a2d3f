"""The comparison row of Table 7: `lm4lv-gemma3`'s chain (same data, seed, steps, batch and interface) on the
frozen SmolLM2-135M-Instruct instead of Gemma 3 270M. Not shipped: the shipped SmolLM2 checkpoint is stage 3z's longer
chain (checkpoints/lm4lv-smollm2/README.md).
Session 23 (the LLM in fp32, as Gemma's chain): mean Delta -5.05 dB after stage 1's refit, -4.65 after stage 2's
(Gemma: -4.77, -4.15); research/levers/gemma/same_budget_smollm2, docs/RESULTS.md Table 7."""

from train.recipes import Recipe
from train.recipes.lm4lv_gemma3 import chain

RECIPE = Recipe(
    name="same-budget-smollm2",
    description="lm4lv-gemma3's chain on SmolLM2 (Table 7's comparison; not shipped)",
    checkpoint="runs/recipes/same-budget-smollm2/stage2_refit",
    steps=chain("smollm2"),
)
