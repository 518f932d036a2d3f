"""How much of a clean token the routing probe's ridge readout finds in the input embedding, with and without the
position embeddings: the MAE tokens, the whitened features adapter_in reads, adapter_in's output alone, and the
embedding the LLM gets (adapter_in + the position vector). Clean crops / skimage photos as in train.routing.

    PYTHONPATH=. python research/levers/detail/carry/embedding_readout.py --checkpoint research/checkpoints/candidates/repeat-3z \
        --task repeat
"""
import argparse

import torch

from lm4lv_core.images import fit_square
from lm4lv_core.variants import load_model
from train.data import RandomCrops
from train.evaluate import load_eval_images
from train.routing import FIT_BATCH, image_psnr, make_set, patches, ridge_readout, to_image

p = argparse.ArgumentParser()
p.add_argument("--checkpoint", default="checkpoints/lm4lv-smollm2")
p.add_argument("--task", default="denoise", help="whose adapter_in")
args = p.parse_args()
torch.set_num_threads(1)
model = load_model(args.checkpoint)
vision, heads = model.vision, model.heads
crops = RandomCrops("../shared/corpus/train", vision.image_size, seed=2)
fit01 = make_set([to_image(crops.sample(FIT_BATCH + k)) for k in range(64)], "repeat", [0] * 64)[0]
eval01 = make_set([fit_square(im, vision.image_size)[0] for _, im in load_eval_images("skimage", None)], "repeat",
                  [0] * 5)[0]
fit, ev = (vision.encode(vision.normalize(x)) for x in (fit01, eval01))  # (B, N, vision_dim)
views = {"MAE tokens": lambda t: t, "whitened features": heads.written,
         "adapter_in alone": lambda t: heads.input_adapter(args.task)(heads.written(t)),
         "embedding (with positions)": lambda t: model.visual_to_llm(t, tasks=[args.task] * len(t))}
with torch.no_grad():
    for name, view in views.items():
        x_fit, x_eval = view(fit)[:, 1:].float(), view(ev)[:, 1:].float()  # the patch tokens
        score = image_psnr(vision, ridge_readout(x_fit, patches(vision, fit01))(x_eval), eval01)
        print(f"{name}: {score:.2f} dB", flush=True)
