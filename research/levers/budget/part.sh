#!/usr/bin/env bash
# One task's part (the paper's one model per task): STEPS (default 150) steps of the chain recipe on TASK alone,
# from INIT, the shared position embeddings frozen so that train.merge_tasks can put the part back into INIT.
# Outputs in runs/NAME, on one thread.
#   bash research/levers/budget/part.sh NAME INIT TASK SEED [extra train_lm4lv flags]
set -euo pipefail
name=$1 init=$2 task=$3 seed=$4
shift 4
export OMP_NUM_THREADS=1
python -m train.train_lm4lv --vision checkpoints/mae-tiny --out "runs/$name" --init-from "$init" \
    --tasks "$task" --whiten 1e-4 --pixel-loss 1 --steps "${STEPS:-150}" --batch-size 8 --lr 3e-4 --warmup 10 \
    --self-condition 0 --position-embeddings --position-lr-scale 0 --probe-every 0 --save-every 25 --seed "$seed" \
    --carry-loss 1 --carry-layer 18 --carry-kv-head 2 --carry-target reference --threads 1 --task-readouts "$@"
