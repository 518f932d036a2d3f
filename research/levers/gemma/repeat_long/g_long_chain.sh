#!/bin/bash
# The rest of chain() from the 3,000-step copy stage's stage 1 (runs/g_long_s1, made by g_after_long.sh, or its export
# in stage1/): stage 1's refit (8 batches), stage 2 with the carry loss at layer 11 / KV head 0, its refit (4 batches),
# each scored with Table 2. lm4lv-gemma3's commands at two threads, fp32; each step skipped when its output exists
# (rerun to go on).
set -e
export LM4LV_DTYPE=fp32
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
t0=$(date +%s)
STAGE1=runs/g_long_s1/lm4lv  # runs/ is scratch: without it, stage 1's export committed beside this script, read in place
[ -d $STAGE1 ] || STAGE1=research/levers/gemma/repeat_long/stage1/lm4lv
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_long_chain.times; }
[ -f runs/g_long_s1_refit/refit.json ] || python -m train.refit_readout --checkpoint $STAGE1 --out runs/g_long_s1_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 8 --threads 2 > runs/g_long_s1_refit.log 2>&1
stamp refit1
[ -f runs/g_long_s1_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s1_refit --images skimage --tasks all --json runs/g_long_s1_eval.json --markdown runs/g_long_s1_eval.md > runs/g_long_s1_eval.log 2>&1
stamp eval1
[ -f runs/g_long_s2/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_long_s2 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 1 $COMMON $PER_TASK --init-from runs/g_long_s1_refit --carry-loss 1 --carry-layer 11 --carry-kv-head 0 --carry-target reference --resume > runs/g_long_s2.log 2>&1
stamp stage2
[ -f runs/g_long_s2_raw_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s2/lm4lv --images skimage --tasks all --json runs/g_long_s2_raw_eval.json --markdown runs/g_long_s2_raw_eval.md > runs/g_long_s2_raw_eval.log 2>&1
[ -f runs/g_long_s2_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_long_s2/lm4lv --out runs/g_long_s2_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 4 --threads 2 > runs/g_long_s2_refit.log 2>&1
stamp refit2
[ -f runs/g_long_s2_eval.json ] || python -m train.evaluate --checkpoint runs/g_long_s2_refit --images skimage --tasks all --json runs/g_long_s2_eval.json --markdown runs/g_long_s2_eval.md > runs/g_long_s2_eval.log 2>&1
stamp eval2
