"""How far are the learned position embeddings from being used? Multiply a checkpoint's position embeddings by K,
print the copying heads' mass (teacher forced, and with another photo's reference tokens in the HQ slots: positions
right, contents wrong) and write the scaled checkpoint, to score with the usual commands:

    PYTHONPATH=. python docs/levers/detail/position/scaled.py --checkpoint runs/pos/g05pos_refit --scale 10 \
        --out runs/pos/scaled10
    OMP_NUM_THREADS=1 python -m train.evaluate --checkpoint runs/pos/scaled10 --images skimage --tasks denoise --json ...
    python -m train.refit_readout --checkpoint runs/pos/scaled10 --out runs/pos/scaled10_refit --inputs free \
        --rounds 2 --tasks denoise --threads 1
"""
import argparse
import os

import torch

from lm4lv_core.images import fit_square
from lm4lv_core.variants import load_model
from train.evaluate import load_eval_images
from train.routing import attention_statistics, make_set

p = argparse.ArgumentParser()
p.add_argument("--checkpoint", required=True)
p.add_argument("--scale", type=float, required=True)
p.add_argument("--out", default=None, help="write the scaled checkpoint here")
p.add_argument("--vision", default="checkpoints/mae-tiny")
args = p.parse_args()
torch.set_num_threads(1)
model = load_model(args.checkpoint)
clean = [fit_square(im, model.image_size)[0] for _, im in load_eval_images("skimage", None)]
lq01, hq01, _ = make_set(clean, "denoise", [i * 101 for i in range(len(clean))])
with torch.no_grad():
    model.heads.visual_positions.mul_(args.scale)
    lq, hq = (model.vision.encode(model.vision.normalize(x)) for x in (lq01, hq01))
    tasks = ["denoise"] * len(lq)
    for name, fed in {"teacher (reference tokens)": hq, "another photo's reference tokens": hq.roll(1, dims=0)}.items():
        stats = attention_statistics(model, model.embed_layout(model.training_layout, lq, tasks, fed))
        heads = ", ".join(f"{h['layer']}.{h['head']}: {h['mass']:.2f} / {h['top_choice']:.0%}"
                          for h in stats["copy_heads"][:3])
        print(f"x{args.scale:g} {name}: {heads}", flush=True)
if args.out:
    model.save_pretrained(args.out, vision_path=os.path.relpath(os.path.abspath(args.vision), os.path.abspath(args.out)))
