# Diagnostic behind research/NOTEBOOK.md "Where the copy loses the detail".
# usage: PYTHONPATH=. python research/levers/detail/copy/sublayers.py CHECKPOINT TASK LAYERS
"""Readout of the LQ token's own pixels from the residual stream after each sublayer (attention / MLP) of the first layers."""
import sys, torch
from train.engine import load_autoregressive
from train.evaluate import load_eval_images
from train.routing import make_set, ridge_readout, image_psnr, patches, to_image, FIT_BATCH
from train.data import RandomCrops
from lm4lv_core.images import fit_square
from lm4lv_core.sequence import LQ
ckpt, task, layers = sys.argv[1], sys.argv[2], int(sys.argv[3])
m = load_autoregressive(None if ckpt == "-" else ckpt, 2, "diag")
v = m.vision
crops = RandomCrops("../shared/corpus/train", m.image_size, seed=2)
fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(64)]
ev_clean = [fit_square(im, m.image_size)[0] for _, im in load_eval_images("skimage", None)]
L = m.training_layout; r = L.positions(LQ)[1:]
def run(clean, seeds):
    lq01, hq01, _ = make_set(clean, task, seeds)
    parts = []
    for i in range(0, len(clean), 16):
        a, b = lq01[i:i+16], hq01[i:i+16]
        store, hooks = {}, []
        for l in range(layers):
            blk = m.llm.base_model.layers[l]
            hooks.append(blk.self_attn.register_forward_hook(lambda mod, inp, out, l=l: store.__setitem__(("attn", l), out[0])))
            hooks.append(blk.mlp.register_forward_hook(lambda mod, inp, out, l=l: store.__setitem__(("mlp", l), out)))
        with torch.no_grad():
            lq, hq = v.encode(v.normalize(a)), v.encode(v.normalize(b))
            emb = m.embed_layout(L, lq, [task]*len(a), hq)
            m.llm.base_model(inputs_embeds=emb.to(m.llm_dtype))
        for h in hooks: h.remove()
        x = emb.to(m.llm_dtype).float()
        states = [("embedding", x[:, r])]
        for l in range(layers):
            x = x + store[("attn", l)].float(); states.append((f"after attention {l}", x[:, r]))
            states.append((f"attention {l} output alone", store[("attn", l)].float()[:, r]))
            x = x + store[("mlp", l)].float(); states.append((f"after MLP {l}", x[:, r]))
            states.append((f"MLP {l} output alone", store[("mlp", l)].float()[:, r]))
        parts.append(states)
    names = [n for n, _ in parts[0]]
    return lq01, {n: torch.cat([p[k][1] for p in parts]) for k, n in enumerate(names)}
flq, fs = run(fit_clean, [10**6+i for i in range(64)])
elq, es = run(ev_clean, list(range(len(ev_clean))))
y = patches(v, flq)
for n in fs:
    print(f"{n}: {image_psnr(v, ridge_readout(fs[n], y)(es[n]), elq):.2f} dB, rms {es[n].pow(2).mean().sqrt():.2f}")
