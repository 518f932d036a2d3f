"""How readable can ANY linear adapter_in keep a clean image token at the copying layer's input?

Trains adapter_in (from stage 3e's) and a linear probe on the carry objective alone (no task loss): the probe reads
the residual stream entering layer 18 (through that layer's input norm) at each LQ position and predicts the token's
decoded pixels. Only the prefix + the 65 LQ tokens are run, through layers 0-17. Before and after, the routing probe's
`lq_stream` readout (ridge fitted on 64 training crops, scored on the 5 skimage photos, clean tokens as in `repeat`).

    PYTHONPATH=. python research/levers/detail/carry/bound.py --steps 400 --lr 1e-3 --threads 2 \
        --save runs/carry/bound_adapters --json research/levers/detail/carry/bound.json

(10.5 min on two cores; the adapters it saved are in bound_adapters/ beside this script.)
"""
import argparse
import json
import os
import time

import torch
from torch.nn import functional as F

from lm4lv_core.images import fit_square
from lm4lv_core.variants import load_model
from train.data import RandomCrops
from train.least_squares import fit_linear
from train.evaluate import load_eval_images
from train.routing import FIT_BATCH, image_psnr, make_set, patches, ridge_readout, to_image

p = argparse.ArgumentParser()
p.add_argument("--checkpoint", default="checkpoints/lm4lv-smollm2")
p.add_argument("--layer", type=int, default=18)
p.add_argument("--steps", type=int, default=400)
p.add_argument("--batch-size", type=int, default=16)
p.add_argument("--lr", type=float, default=1e-3)
p.add_argument("--threads", type=int, default=1)
p.add_argument("--task", default=None, help="the task whose adapter_in is trained (a checkpoint with one per task)")
p.add_argument("--json", default=None)
p.add_argument("--save", default=None, help="write the checkpoint with the trained adapter_in here")
args = p.parse_args()
torch.set_num_threads(args.threads)
torch.manual_seed(0)
model = load_model(args.checkpoint)
embed = lambda tokens: model.visual_to_llm(tokens, tasks=[args.task] * len(tokens) if args.task else None)
vision, base, layer = model.vision, model.llm.base_model, args.layer
prefix = model.constant_prefix()[:layer]  # keys and values of the constant text before the LQ image
norm = base.layers[layer].input_layernorm  # what the copying layer reads through
base.layers = base.layers[:layer]  # run layers 0 .. layer-1 only
captured = {}
base.layers[-1].register_forward_hook(lambda m, i, o: captured.__setitem__("x", o[0] if isinstance(o, tuple) else o))


def stream(tokens):
    """(B, N, vision_dim) tokens as the LQ image -> (B, N, llm_dim) residual stream entering `layer`."""
    cache = model._cache([(k.expand(len(tokens), -1, -1, -1), v.expand(len(tokens), -1, -1, -1)) for k, v in prefix])
    base(inputs_embeds=embed(tokens).to(model.llm_dtype), use_cache=True, **{model._cache_kwarg: cache})
    return captured["x"].float()


size = vision.image_size
crops = RandomCrops("../shared/corpus/train", size, seed=2)
fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(64)]
eval_clean = [fit_square(im, size)[0] for _, im in load_eval_images("skimage", None)]
fit01, eval01 = make_set(fit_clean, "repeat", [0] * 64)[0], make_set(eval_clean, "repeat", [0] * 5)[0]


@torch.no_grad()
def readability() -> dict:
    """lq_stream at `layer` and at the input embedding (ridge readouts, as train.routing), and the embedding rms."""
    f, e = vision.encode(vision.normalize(fit01)), vision.encode(vision.normalize(eval01))
    out = {}
    for name, fn in (("embedding", embed), ("stream", stream)):
        xf, xe = fn(f)[:, 1:].float(), fn(e)[:, 1:].float()
        out[name] = image_psnr(vision, ridge_readout(xf, patches(vision, fit01))(xe), eval01)
    out["embedding_rms"] = float(embed(e)[:, 1:].pow(2).mean().sqrt())
    out["text_embedding_rms"] = float(model.llm.get_input_embeddings().weight.float().pow(2).mean().sqrt())
    return out


before = readability()
print("before", before, flush=True)
probe = torch.nn.Linear(model.llm.config.hidden_size, vision.patch_size**2 * 3)


def read(x):
    """(B, N, llm_dim) stream -> (B, N-1, p*p*3) probe pixels, through the copying layer's own input norm."""
    return probe(norm(x[:, 1:].to(model.llm_dtype)).float())


def targets(tokens):
    with torch.no_grad():
        return vision.mae.patchify(vision.decode(tokens))


with torch.no_grad():  # ridge start of the probe
    batches = [vision.encode(vision.normalize(crops.batch(10**9 + i, args.batch_size))) for i in range(4)]
    fit_linear(probe, torch.cat([norm(stream(t)[:, 1:].to(model.llm_dtype)).float().flatten(0, 1) for t in batches]),
               torch.cat([targets(t).flatten(0, 1) for t in batches]), 1e-2)
adapter = model.heads.input_adapter(args.task) if args.task else model.heads.adapter_in
params = list(adapter.parameters()) + list(probe.parameters())
for p_ in model.heads.parameters():
    p_.requires_grad_(False)
for p_ in params:
    p_.requires_grad_(True)
opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.0)
began, curve = time.time(), []
for step in range(args.steps):
    for g in opt.param_groups:
        g["lr"] = args.lr * min(1.0, (step + 1) / 10)
    tok = vision.encode(vision.normalize(crops.batch(step, args.batch_size)))
    loss = F.mse_loss(read(stream(tok)), targets(tok))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    curve.append(float(loss.detach()))
    if step % 50 == 0 or step == args.steps - 1:
        print(f"step {step} carry {sum(curve[-50:]) / len(curve[-50:]):.4f} {time.time() - began:.0f}s", flush=True)
after = readability()
print("after", after, flush=True)
if args.save:
    model.save_pretrained(args.save, vision_path=os.path.relpath(os.path.abspath("checkpoints/mae-tiny"), args.save))
if args.json:
    with open(args.json, "w") as f:
        json.dump({"checkpoint": args.checkpoint, "task": args.task, "layer": layer, "steps": args.steps,
                   "batch_size": args.batch_size, "lr": args.lr, "before": before, "after": after, "seconds": time.time() - began,
                   "carry_first_50": sum(curve[:50]) / len(curve[:50]),
                   "carry_last_50": sum(curve[-50:]) / len(curve[-50:])}, f, indent=2)
