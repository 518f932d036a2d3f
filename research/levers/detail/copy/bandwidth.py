"""How wide is the copy? Readouts of an LQ token's pixels from a rank-k linear map of the MAE token, and from the
value vectors of the copying layer, one KV head at a time (the copying heads 18.6 and 18.7 share KV head 2, so what
they move is that head's 64 dimensions).

    PYTHONPATH=. python research/levers/detail/copy/bandwidth.py --checkpoint checkpoints/lm4lv-smollm2 --task denoise

Readouts are train.routing's (ridge chosen on held-out crops, fitted on 64 corpus crops, scored on the skimage
photos as the PSNR of the assembled image). `tokens rank k`: the best rank-k linear readout from the MAE token
(reduced-rank ridge: the full readout projected on the top k principal directions of its own fitted pixels); targets
are the LQ token's own pixels ("own") and the reference's ("target", what a restoration could at best read from a copy
of k dimensions of the token). `values layer.head`: from that KV head's value vectors at the LQ positions.
"""
from __future__ import annotations

import argparse

import torch

from lm4lv_core.llm import head_dim
from train.engine import load_autoregressive
from train.routing import image_psnr, patches, probe_images, probe_sets, ridge_readout, set_traces


def rank_k_readout(x_fit: torch.Tensor, y_fit: torch.Tensor, k: int):
    """The full ridge readout projected on the top-k principal directions of its fitted outputs."""
    full = ridge_readout(x_fit, y_fit)
    fitted = full(x_fit).reshape(-1, y_fit.shape[-1]).double()
    mean = fitted.mean(0)
    _, _, vh = torch.linalg.svd(fitted - mean, full_matrices=False)
    basis = vh[:k].T  # (out, k)
    return lambda q: (((full(q).double() - mean) @ basis) @ basis.T + mean).float()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--task", default="denoise")
    p.add_argument("--layer", type=int, default=18)
    p.add_argument("--ranks", default="8,16,32,64,96,128,192")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    model = load_autoregressive(args.checkpoint, args.threads, "the bandwidth probe")
    vision = model.vision
    fit_clean, eval_clean = probe_images("../shared/corpus/train", "skimage", model.image_size)
    (fit_lq, fit_hq, _), (ev_lq, ev_hq, _) = probe_sets(args.task, fit_clean, eval_clean)
    with torch.no_grad():
        tok_fit = vision.encode(vision.normalize(fit_lq))[:, 1:]
        tok_ev = vision.encode(vision.normalize(ev_lq))[:, 1:]
        targets = {"own": (patches(vision, fit_lq), ev_lq), "target": (patches(vision, fit_hq), ev_hq)}
        for k in [int(r) for r in args.ranks.split(",")]:
            row = {name: image_psnr(vision, rank_k_readout(tok_fit, y, k)(tok_ev), ref) for name, (y, ref) in
                   targets.items()}
            print(f"tokens rank {k:3d}: own {row['own']:.2f} dB, target {row['target']:.2f} dB")
        v_fit, v_ev = (set_traces(model, lq, hq, args.task, [args.layer])["value"][args.layer]  # (B, L, kv_dim)
                       for lq, hq in ((fit_lq, fit_hq), (ev_lq, ev_hq)))
        width = head_dim(model.llm.config)
        groups = {f"{args.layer}.kv{h}": slice(h * width, (h + 1) * width) for h in range(v_fit.shape[-1] // width)}
        groups[f"{args.layer}.all"] = slice(None)
        for name, cols in groups.items():
            row = {t: image_psnr(vision, ridge_readout(v_fit[..., cols], y)(v_ev[..., cols]), ref)
                   for t, (y, ref) in targets.items()}
            print(f"values {name}: own {row['own']:.2f} dB, target {row['target']:.2f} dB")


if __name__ == "__main__":
    main()
