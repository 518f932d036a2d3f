#!/bin/bash
# Table 7 at equal budget for Gemma's 3,000-step copy stage (session 29 on): SmolLM2's `repeat` run with exactly
# Gemma's history (stage 0's command with --llm smollm2: 450 steps, then the finished run continued in its folder to a
# 3,000-step total with --resume), two threads, fp32. Stops cleanly on SIGTERM (the state is saved); rerun to go on
# (each session commits runs/s_repeat_long into research/levers/gemma/repeat_long_smollm2/run and copies it back).
set -e
export LM4LV_DTYPE=fp32
[ -d runs/s_repeat_long ] || [ ! -d research/levers/gemma/repeat_long_smollm2/run ] || cp -r research/levers/gemma/repeat_long_smollm2/run runs/s_repeat_long
CMD="python -m train.train_lm4lv --llm smollm2 --out runs/s_repeat_long --tasks repeat --lr 1e-3 --warmup 10 --position-lr-scale 30 --seed 0 --vision checkpoints/mae-tiny --whiten 1e-4 --pixel-loss 1 --batch-size 8 --position-embeddings --probe-every 0 --save-every 25 --threads 2 --resume"
planned=$(python -c "import json;print(json.load(open('runs/s_repeat_long/state/state.json')).get('steps'))" 2>/dev/null || echo none)
[ "$planned" = "3000" ] || $CMD --steps 450 >> runs/s_repeat_long.log 2>&1
$CMD --steps 3000 >> runs/s_repeat_long.log 2>&1
