"""Is the copy content-addressed by the fed-back token? Copying heads' mass and top choice (teacher-forced attention
statistics of train.routing) when the HQ slots hold: the reference's tokens (teacher forcing), the model's own
generation (free running), the reference tokens of ANOTHER photo (right positions, wrong content), and the LQ tokens
shifted by one (each fed token = the LQ token it follows: the content an induction head would match).

    PYTHONPATH=. python research/levers/detail/copy/addressing.py --task denoise > research/levers/detail/copy/addressing_denoise.txt

`--position-scale K` first multiplies the checkpoint's position embeddings by K (how far the learned ones are from being
used as the copy's address); `--save DIR` writes that scaled checkpoint, to score with train.evaluate / refit_readout.
"""
import argparse
import os

import torch

from lm4lv_core.images import fit_square
from lm4lv_core.variants import load_model
from train.evaluate import degradation_seed, load_eval_images
from train.refit_readout import fed_tokens
from train.routing import attention_statistics, make_set

p = argparse.ArgumentParser()
p.add_argument("--checkpoint", default="checkpoints/lm4lv-smollm2")
p.add_argument("--task", default="denoise")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--position-scale", type=float, default=1.0)
p.add_argument("--save", default=None, help="write the (scaled) checkpoint here")
p.add_argument("--vision", default="checkpoints/mae-tiny", help="the vision module --save records")
args = p.parse_args()
torch.set_num_threads(args.threads)
model = load_model(args.checkpoint)
if args.position_scale != 1.0:
    with torch.no_grad():
        model.heads.visual_positions.mul_(args.position_scale)
vision = model.vision
clean = [fit_square(im, model.image_size)[0] for _, im in load_eval_images("skimage", None)]
lq01, hq01, _ = make_set(clean, args.task, [degradation_seed(0, i, args.task) for i in range(len(clean))])
with torch.no_grad():
    lq, hq = vision.encode(vision.normalize(lq01)), vision.encode(vision.normalize(hq01))
    tasks = [args.task] * len(lq)
    feeds = {"teacher (reference tokens)": hq,
             "free running (own generation)": fed_tokens(model, lq, hq, tasks, "free"),
             "another photo's reference tokens": hq.roll(1, dims=0),
             "the LQ tokens themselves": lq}
    for name, fed in feeds.items():
        stats = attention_statistics(model, model.embed_layout(model.training_layout, lq, tasks, fed))
        heads = ", ".join(f"{h['layer']}.{h['head']}: {h['mass']:.2f} / {h['top_choice']:.0%}"
                          for h in stats["copy_heads"][:3])
        print(f"{name}: {heads}", flush=True)
if args.save:
    model.save_pretrained(args.save, vision_path=os.path.relpath(os.path.abspath(args.vision), os.path.abspath(args.save)))
