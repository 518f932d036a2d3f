#!/usr/bin/env bash
# A part's free-running refit (its one task, 2 rounds) and its task's Table 2 row on the skimage photos, on one
# thread. The refit depends on the task's own weights alone, so
# train.merge_tasks may take the refitted part. BATCHES (default 8, the refit's default) sets its sample count in
# batches of 16; SUFFIX (default "refit") names the outputs, runs/NAME_SUFFIX and runs/NAME_SUFFIX_eval.*.
#   BATCHES=32 SUFFIX=refit32 bash research/levers/budget/part_eval.sh NAME TASK
set -euo pipefail
name=$1 task=$2 out="$1_${SUFFIX:-refit}"
export OMP_NUM_THREADS=1
python -m train.refit_readout --checkpoint "runs/$name/lm4lv" --out "runs/$out" --tasks "$task" --inputs free \
    --rounds 2 --task-readouts --threads 1 --batches "${BATCHES:-8}"
python -m train.evaluate --checkpoint "runs/$out" --images skimage --tasks "$task" \
    --json "runs/${out}_eval.json" --markdown "runs/${out}_eval.md"
