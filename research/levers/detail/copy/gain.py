# Diagnostic behind research/NOTEBOOK.md "Where the copy loses the detail": scale adapter_in by each gain and rerun the routing probe.
# usage: PYTHONPATH=. python research/levers/detail/copy/gain.py CHECKPOINT TASK GAINS (comma list)
import sys, torch
from train.engine import load_autoregressive
from train.evaluate import load_eval_images
from train.routing import routing_table, to_image, FIT_BATCH
from train.data import RandomCrops
from lm4lv_core.images import fit_square
ckpt, task = sys.argv[1], sys.argv[2]
m = load_autoregressive(None if ckpt == "-" else ckpt, 2, "diag")
size = m.image_size
crops = RandomCrops("../shared/corpus/train", size, seed=2)
fit_clean = [to_image(crops.sample(FIT_BATCH + k)) for k in range(64)]
ev_clean = [fit_square(im, size)[0] for _, im in load_eval_images("skimage", None)]
w0, b0 = m.heads.adapter_in.weight.clone(), m.heads.adapter_in.bias.clone()
for s in [float(x) for x in sys.argv[3].split(",")]:
    with torch.no_grad():
        m.heads.adapter_in.weight.copy_(w0 * s); m.heads.adapter_in.bias.copy_(b0 * s)
    t = routing_table(m, task, fit_clean, ev_clean, [0, 18])
    print(f"gain {s}: lq_stream l1 {t['lq_stream'][1]:.2f} l3 {t['lq_stream'][3]:.2f} l18 {t['lq_stream'][18]:.2f}; writing l18 {t['writing'][18]:.2f} l19 {t['writing'][19]:.2f} final {t['writing'][-1]:.2f}, adapter_out(tf) {t['adapter_out']:.2f}, values L0 {t['value']['0']:.2f} L18 {t['value']['18']:.2f}", flush=True)
