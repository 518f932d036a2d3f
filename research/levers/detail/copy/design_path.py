# Diagnostic behind research/NOTEBOOK.md "Where the copy loses the detail".
# usage: PYTHONPATH=. python research/levers/detail/copy/design_path.py CHECKPOINT TASK LAYER KV_HEAD K BETAS (comma list)
"""Add a designed path: whitened top-K content directions -> the subspace the copy head (layer L, KV head h) reads."""
import sys, torch
from train.engine import load_autoregressive
from train.evaluate import load_eval_images
from train.routing import routing_table, to_image, FIT_BATCH
from train.data import RandomCrops
from lm4lv_core.images import fit_square
ckpt, task, layer, kvh = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
K = int(sys.argv[5]); betas = [float(x) for x in sys.argv[6].split(",")]
m = load_autoregressive(None if ckpt == "-" else ckpt, 1, "diag")
size = m.image_size
crops = RandomCrops("../shared/corpus/train", size, seed=2)
fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(64)]
ev_clean = [fit_square(im, size)[0] for _, im in load_eval_images("skimage", None)]
blk = m.llm.base_model.layers[layer]
V = blk.self_attn.v_proj.weight.float()  # (kv*hd, 576)
hd = V.shape[0] // m.llm.config.num_key_value_heads
M = V[kvh*hd:(kvh+1)*hd] * blk.input_layernorm.weight.float()  # (hd, 576)
U, S, Vh = torch.linalg.svd(M, full_matrices=False)  # Vh: (hd, 576) read directions, strongest first
print("singular values of the copy head's read:", S[:5].tolist(), S[-3:].tolist())
D = torch.zeros(576, m.heads.config.vision_dim)
top = torch.arange(m.heads.config.vision_dim - 1, m.heads.config.vision_dim - 1 - K, -1)  # whitened coords, largest variance first
D[:, top] = Vh[:K].T
w0, emb_rms = m.heads.adapter_in.weight.clone(), None
for beta in betas:
    with torch.no_grad():
        m.heads.adapter_in.weight.copy_(w0 + beta * D)
    t = routing_table(m, task, fit_clean, ev_clean, [0, layer])
    print(f"beta {beta}: writing l{layer+1} {t['writing'][layer+1]:.2f} final {t['writing'][-1]:.2f}, tf adapter_out {t['adapter_out']:.2f}, "
          f"lq_stream l0 {t['lq_stream'][0]:.2f} l{layer} {t['lq_stream'][layer]:.2f}, values L{layer} {t['value'][str(layer)]:.2f}, "
          f"copy heads {[(h['layer'], h['head'], round(h['mass'], 2)) for h in t['attention']['copy_heads'][:3]]}", flush=True)
