"""The comparison row of Table 7: `lm4lv-gemma3`'s chain at Table 7's budget (same data, seed, steps, batch and
interface: 450 steps of the copy on `repeat` first, then all tasks, the refits and the carry loss; the shipped Gemma
chain goes past it: 3,000 copy steps, 600 all-task steps, no stage 2) on the frozen SmolLM2-135M-Instruct instead of Gemma 3 270M: -3.21 dB (Gemma
at this budget: -3.25; with a stage 0 of 150 or 300 steps: -3.80 / -3.85 and -3.36 / -3.37; without it: -4.65
and -4.15). Not shipped: the shipped SmolLM2 checkpoint is stage 3z's longer chain (checkpoints/lm4lv-smollm2/README.md).
Its Table 7 rows (docs/RESULTS.md; research/levers/gemma/same_budget_smollm2, copy_first_smollm2, copy_first_300 and
copy_first_450) were run with the LLM in fp32, as Gemma's chain ran on a CPU without bf16 units; the recipe pins it."""

from train.recipes import Recipe
from train.recipes.lm4lv_gemma3 import chain

RECIPE = Recipe(
    name="same-budget-smollm2",
    description="lm4lv-gemma3's chain on SmolLM2 (Table 7's comparison; not shipped)",
    checkpoint="runs/recipes/same-budget-smollm2/stage2_refit",
    steps=chain("smollm2"),
    llm_dtype="fp32",
)
