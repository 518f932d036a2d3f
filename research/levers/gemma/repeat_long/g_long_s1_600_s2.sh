#!/bin/bash
# The rest of chain() after the 600-step stage 1 from the 3,000-step copy (session 29): stage 2 with the carry loss at
# layer 11 / KV head 0 from stage 1's refit (4 batches), Table 2 before its refit, its refit (4 batches), Table 2.
# Two threads, fp32, one job at a time: waits for g_long_s1_600.sh to finish.
set -e
export LM4LV_DTYPE=fp32
while pgrep -f g_long_s1_600.sh > /dev/null; do sleep 15; done
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
t0=$(date +%s)
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_long_s1_600_s2.times; }
[ -f runs/g_long_s1_600_s2/lm4lv/training.json ] && grep -q '"steps": 150' runs/g_long_s1_600_s2/lm4lv/training.json || python -m train.train_lm4lv --out runs/g_long_s1_600_s2 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 1 $COMMON $PER_TASK --init-from runs/g_long_s1_600_refit4 --carry-loss 1 --carry-layer 11 --carry-kv-head 0 --carry-target reference --resume > runs/g_long_s1_600_s2.log 2>&1
stamp stage2
[ -f runs/g_long_s1_600_s2_raw_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s1_600_s2/lm4lv --images skimage --tasks all --json runs/g_long_s1_600_s2_raw_eval.json --markdown runs/g_long_s1_600_s2_raw_eval.md > runs/g_long_s1_600_s2_raw_eval.log 2>&1
stamp eval_raw
[ -f runs/g_long_s1_600_s2_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_long_s1_600_s2/lm4lv --out runs/g_long_s1_600_s2_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 4 --threads 2 > runs/g_long_s1_600_s2_refit.log 2>&1
stamp refit
[ -f runs/g_long_s1_600_s2_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s1_600_s2_refit --images skimage --tasks all --json runs/g_long_s1_600_s2_eval.json --markdown runs/g_long_s1_600_s2_eval.md --grid runs/g_long_s1_600_s2_eval.png > runs/g_long_s1_600_s2_eval.log 2>&1
stamp eval
