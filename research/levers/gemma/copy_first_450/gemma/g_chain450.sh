#!/bin/bash
# Gemma 450 repeat + 150 all-task chain (session 27); every step at 2 threads, fp32; lm4lv-gemma3's commands with
# chain(llm, copy_steps=450).
set -e
export LM4LV_DTYPE=fp32
COMMON="--vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2"
PER_TASK="--task-readouts --task-input-adapters"
t0=$(date +%s)
stamp() { echo "[$(date +%T)] $1 done after $(( $(date +%s) - t0 )) s" >> runs/g_chain450.times; }
[ -f runs/g_repeat450/lm4lv/training.json ] || python -m train.train_lm4lv --llm gemma3 --out runs/g_repeat450 --tasks repeat --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 --steps 450 $COMMON --resume > runs/g_repeat450.log 2>&1
stamp stage0
python -m train.evaluate --checkpoint runs/g_repeat450/lm4lv --images skimage --tasks repeat --json runs/g_repeat450_eval.json --markdown runs/g_repeat450_eval.md > runs/g_repeat450_eval.log 2>&1
[ -f runs/g_cf450/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_cf450 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 $COMMON $PER_TASK --init-from runs/g_repeat450/lm4lv --resume > runs/g_cf450.log 2>&1
stamp stage1
python -m train.evaluate --checkpoint runs/g_cf450/lm4lv --images skimage --tasks all --json runs/g_cf450_raw_eval.json --markdown runs/g_cf450_raw_eval.md > runs/g_cf450_raw_eval.log 2>&1
[ -f runs/g_cf450_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_cf450/lm4lv --out runs/g_cf450_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 8 --threads 2 > runs/g_cf450_refit.log 2>&1
stamp refit1
python -m train.evaluate --checkpoint runs/g_cf450_refit --images skimage --tasks all --json runs/g_cf450_eval.json --markdown runs/g_cf450_eval.md > runs/g_cf450_eval.log 2>&1
stamp eval1
[ -f runs/g_cf450_s2/lm4lv/training.json ] || python -m train.train_lm4lv --out runs/g_cf450_s2 --steps 150 --llm gemma3 --tasks all --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 1 $COMMON $PER_TASK --init-from runs/g_cf450_refit --carry-loss 1 --carry-layer 11 --carry-kv-head 0 --carry-target reference --resume > runs/g_cf450_s2.log 2>&1
stamp stage2
python -m train.evaluate --checkpoint runs/g_cf450_s2/lm4lv --images skimage --tasks all --json runs/g_cf450_s2_raw_eval.json --markdown runs/g_cf450_s2_raw_eval.md > runs/g_cf450_s2_raw_eval.log 2>&1
[ -f runs/g_cf450_s2_refit/refit.json ] || python -m train.refit_readout --checkpoint runs/g_cf450_s2/lm4lv --out runs/g_cf450_s2_refit --inputs free --rounds 2 --tasks all --task-readouts --batches 4 --threads 2 > runs/g_cf450_s2_refit.log 2>&1
stamp refit2
python -m train.evaluate --checkpoint runs/g_cf450_s2_refit --images skimage --tasks all --json runs/g_cf450_s2_eval.json --markdown runs/g_cf450_s2_eval.md > runs/g_cf450_s2_eval.log 2>&1
stamp eval2
