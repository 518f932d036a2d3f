#!/usr/bin/env bash
# One 150-step chunk of the shipped stage recipe (stage 3or's: whitened adapters, pixel loss, position embeddings,
# reference carry loss at layer 18, KV head 2), then the free-running refit (2 rounds; per task when the model has a
# readout per task) and Table 2 on the skimage photos. Outputs in runs/NAME*, on one thread.
#   bash research/levers/budget/chain.sh NAME INIT SEED [extra train_lm4lv flags, e.g. --self-condition 0 --task-readouts]
# SELF_CONDITION (default "0.5 generated"): the self-conditioning fraction and its inputs, "0" for none.
set -euo pipefail
name=$1 init=$2 seed=$3
shift 3
read -r fraction inputs <<< "${SELF_CONDITION:-0.5 generated}"
self_condition=(--self-condition "$fraction")
[ -n "${inputs:-}" ] && self_condition+=(--self-condition-inputs "$inputs")
export OMP_NUM_THREADS=1
python -m train.train_lm4lv --vision checkpoints/mae-tiny --out "runs/$name" --init-from "$init" \
    --tasks all --whiten 1e-4 --pixel-loss 1 --steps 150 --batch-size 8 --lr 1e-3 --warmup 10 "${self_condition[@]}" \
    --position-embeddings --position-lr-scale 30 --probe-every 0 --save-every 25 --seed "$seed" \
    --carry-loss 1 --carry-layer 18 --carry-kv-head 2 --carry-target reference --threads 1 "$@"
python -m train.refit_readout --checkpoint "runs/$name/lm4lv" --out "runs/${name}_refit" --tasks all --inputs free \
    --rounds 2 --threads 1
python -m train.evaluate --checkpoint "runs/${name}_refit" --images skimage --tasks all --json "runs/${name}_eval.json" \
    --markdown "runs/${name}_eval.md" --grid "runs/${name}_eval.png"
