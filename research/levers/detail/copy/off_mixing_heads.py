# Diagnostic behind research/NOTEBOOK.md "Where the copy loses the detail".
# usage: PYTHONPATH=. python research/levers/detail/copy/off_mixing_heads.py CHECKPOINT TASK LAYER:KV_HEADS ... (e.g. 0:all 1:0 2:0)
"""adapter_in projected off the value read-space of the mixing heads in the first layers; the routing probe after it."""
import sys, torch
from train.engine import load_autoregressive
from train.evaluate import load_eval_images
from train.routing import routing_table, to_image, FIT_BATCH
from train.data import RandomCrops
from lm4lv_core.images import fit_square
ckpt, task = sys.argv[1], sys.argv[2]
specs = sys.argv[3:]  # e.g. "0:all" "1:0" "2:0"  (layer:kv heads)
m = load_autoregressive(None if ckpt == "-" else ckpt, 2, "diag")
crops = RandomCrops("../shared/corpus/train", m.image_size, seed=2)
fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(64)]
ev_clean = [fit_square(im, m.image_size)[0] for _, im in load_eval_images("skimage", None)]
kv = m.llm.config.num_key_value_heads
rows = []
for spec in specs:
    layer, heads = spec.split(":")
    blk = m.llm.base_model.layers[int(layer)]
    V = blk.self_attn.v_proj.weight.float() * blk.input_layernorm.weight.float()  # (kv*hd, 576)
    hd = V.shape[0] // kv
    for h in (range(kv) if heads == "all" else [int(x) for x in heads.split(",")]):
        rows.append(V[h * hd:(h + 1) * hd])
A = torch.cat(rows)  # (r, 576)
U, S, Vh = torch.linalg.svd(A, full_matrices=True)
rank = int((S > S[0] * 1e-3).sum())
P = torch.eye(576) - Vh[:rank].T @ Vh[:rank]  # projector off the read space
print("read space rank", rank, "of 576")
w0, b0 = m.heads.adapter_in.weight.clone(), m.heads.adapter_in.bias.clone()
content = (w0.norm() ** 2).item()
for mode in ["none", "weights", "weights_rescaled"]:
    with torch.no_grad():
        if mode == "none":
            w = w0
        else:
            w = P @ w0
            if mode == "weights_rescaled":
                w = w * (content / (w.norm() ** 2).item()) ** 0.5
        m.heads.adapter_in.weight.copy_(w)
    t = routing_table(m, task, fit_clean, ev_clean, [0, 18])
    print(f"{mode}: lq_stream l0 {t['lq_stream'][0]:.2f} l3 {t['lq_stream'][3]:.2f} l18 {t['lq_stream'][18]:.2f}, values L18 {t['value']['18']:.2f}, "
          f"writing l19 {t['writing'][19]:.2f} final {t['writing'][-1]:.2f}, tf adapter_out {t['adapter_out']:.2f}, "
          f"copy heads {[(h['layer'], h['head'], round(h['mass'], 2)) for h in t['attention']['copy_heads'][:3]]}, "
          f"mixing l0-2 {[round(x, 2) for x in t['attention']['lq_mixing'][:3]]}", flush=True)
