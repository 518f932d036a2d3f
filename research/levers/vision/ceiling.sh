#!/usr/bin/env bash
# The feature-space ceiling probe of a vision module (issue 15, item 5): a dedicated 4-block, 256-wide Transformer
# (no LLM, residual: it starts as a copy) trained on TASK alone in VISION's MAE space, STEPS (default 600) steps of
# batch 32, then its Table 2 row on the skimage photos next to that module's own MAE-r. On one thread.
#   bash research/levers/vision/ceiling.sh NAME VISION TASK
set -euo pipefail
name=$1 vision=$2 task=$3
export OMP_NUM_THREADS=1
python -m train.train_lm4lv --variant transformer --expert-width 256 --expert-depth 4 --tasks "$task" \
    --vision "$vision" --out "runs/$name" --steps "${STEPS:-600}" --batch-size 32 --lr 5e-4 --warmup 50 \
    --probe-every 0 --save-every 200 --seed 0 --threads 1
python -m train.evaluate --checkpoint "runs/$name/lm4lv" --images skimage --tasks "$task" \
    --json "runs/${name}_eval.json" --markdown "runs/${name}_eval.md"
