#!/bin/bash
# Gemma 300 repeat + 300 all-task chain (session 26); every step at 2 threads, fp32.
set -e
export LM4LV_DTYPE=fp32
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
t0=$(date +%s)
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_chain300.times; }
[ -f runs/g_cf300/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_cf300 --steps 300 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 $COMMON $PER_TASK --init-from runs/g_repeat300/lm4lv --resume > runs/g_cf300.log 2>&1
stamp stage1
[ -f runs/g_cf300_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_cf300/lm4lv --out runs/g_cf300_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 8 --threads 2 > runs/g_cf300_refit.log 2>&1
stamp refit1
python -m train.evaluate --checkpoint runs/g_cf300_refit --images skimage --tasks all --json runs/g_cf300_eval.json --markdown runs/g_cf300_eval.md > runs/g_cf300_eval.log 2>&1
stamp eval1
[ -f runs/g_cf300_s2/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_cf300_s2 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 1 $COMMON $PER_TASK --init-from runs/g_cf300_refit --carry-loss 1 --carry-layer 11 --carry-kv-head 0 --carry-target reference --resume > runs/g_cf300_s2.log 2>&1
stamp stage2
[ -f runs/g_cf300_s2_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_cf300_s2/lm4lv --out runs/g_cf300_s2_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 4 --threads 2 > runs/g_cf300_s2_refit.log 2>&1
stamp refit2
python -m train.evaluate --checkpoint runs/g_cf300_s2_refit --images skimage --tasks all --json runs/g_cf300_s2_eval.json --markdown runs/g_cf300_s2_eval.md > runs/g_cf300_s2_eval.log 2>&1
stamp eval2
