#!/bin/bash
# One lever on the 3,000-step copy's chain (session 29): stage 1 with 600 all-task steps instead of 150 (the same
# 3,000-step export, seed, command and per-task adapters), before and after its refit (4 batches, as stage1_refit4/ for
# the 150-step stage 1). Two threads, fp32, one job at a time: waits for g_long_chain.sh to finish.
set -e
export LM4LV_DTYPE=fp32
while pgrep -f g_long_chain.sh > /dev/null; do sleep 15; done
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
COPY=research/levers/gemma/repeat_long/run/lm4lv  # the 3,000-step `repeat` export, read in place
t0=$(date +%s)
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_long_s1_600.times; }
[ -f runs/g_long_s1_600/lm4lv/training.json ] && grep -q '"steps": 600' runs/g_long_s1_600/lm4lv/training.json || python -m train.train_lm4lv --out runs/g_long_s1_600 --steps 600 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 $COMMON $PER_TASK --init-from $COPY --resume > runs/g_long_s1_600.log 2>&1
stamp stage1_600
[ -f runs/g_long_s1_600_raw_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s1_600/lm4lv --images skimage --tasks all --json runs/g_long_s1_600_raw_eval.json --markdown runs/g_long_s1_600_raw_eval.md > runs/g_long_s1_600_raw_eval.log 2>&1
stamp eval_raw
[ -f runs/g_long_s1_600_refit4/refit.json ] || python -m train.refit_readout --checkpoint runs/g_long_s1_600/lm4lv --out runs/g_long_s1_600_refit4 --inputs free --rounds 2 --tasks all --task-readouts --batches 4 --threads 2 > runs/g_long_s1_600_refit4.log 2>&1
stamp refit4
[ -f runs/g_long_s1_600_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s1_600_refit4 --images skimage --tasks all --json runs/g_long_s1_600_eval.json --markdown runs/g_long_s1_600_eval.md > runs/g_long_s1_600_eval.log 2>&1
stamp eval
