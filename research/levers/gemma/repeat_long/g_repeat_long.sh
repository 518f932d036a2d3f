#!/bin/bash
# Gemma's copy stage continued past 450 steps (session 27 on): the finished 450-step run continued to a 3,000-step
# total in its own folder (--resume; the learning rate follows the new total's schedule from step 450), two threads, fp32.
set -e
export LM4LV_DTYPE=fp32
[ -d runs/g_repeat_long ] || cp -r runs/g_repeat450 runs/g_repeat_long
python -m train.train_lm4lv --llm gemma3 --out runs/g_repeat_long --tasks repeat --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 --steps 3000 --vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2 --resume >> runs/g_repeat_long.log 2>&1
