#!/bin/bash
# After Gemma's 3,000-step copy stage (session 28): score it (and the exports snapshotted at steps 1,500 / 2,000 /
# 2,500), the routing probe on `repeat` with layer 11's value vectors, then stage 1 of chain() from it (150 all-task
# steps, per-task adapters) and its Table 2 before the refit. Two threads, fp32, one job at a time. The refit (the
# recipe's 8 batches, about 27 min) and the rest of the chain: g_long_chain.sh, next session.
set -e
export LM4LV_DTYPE=fp32
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
t0=$(date +%s)
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_after_long.times; }
python -m train.evaluate --checkpoint runs/g_repeat_long/lm4lv --images skimage --tasks repeat --json runs/g_repeat_long_eval.json --markdown runs/g_repeat_long_eval.md > runs/g_repeat_long_eval.log 2>&1
stamp eval_repeat
python -m train.routing --checkpoint runs/g_repeat_long/lm4lv --task repeat --images skimage --value-layers 11 --threads 2 --json runs/g_repeat_long_routing.json > runs/g_repeat_long_routing.log 2>&1
stamp routing
for d in runs/g_repeat_long_snap/step*; do
  python -m train.evaluate --checkpoint $d --images skimage --tasks repeat --json $d.eval.json > $d.eval.log 2>&1
done
stamp eval_snapshots
[ -f runs/g_long_s1/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_long_s1 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 $COMMON $PER_TASK --init-from runs/g_repeat_long/lm4lv --resume > runs/g_long_s1.log 2>&1
stamp stage1
python -m train.evaluate --checkpoint runs/g_long_s1/lm4lv --images skimage --tasks all --json runs/g_long_s1_raw_eval.json --markdown runs/g_long_s1_raw_eval.md > runs/g_long_s1_raw_eval.log 2>&1
stamp eval_raw
