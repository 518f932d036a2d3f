"""Does a louder image token survive layers 0-17? Every visual embedding (what adapter_in writes, position vector
included, LQ and HQ alike) multiplied by s, nothing retrained; ridge readouts of the clean target's pixels (`--task`,
denoise by default; teacher forced, train.routing's fit / evaluation sets) from layer 18's KV head 2 values and
residual stream at the LQ tokens, and from the final hidden state at the writing positions.

    PYTHONPATH=. python research/levers/detail/carry/embed_scale.py --checkpoint checkpoints/lm4lv-smollm2 --scales 0.5,1,2,4,8

The idea tested: every layer reads the stream through an RMSNorm, so a layer's output has about the same size
whatever the token's; a token s times louder should dominate what layers 0-17 add to it.
"""
from __future__ import annotations

import argparse

import torch

from lm4lv_core.llm import head_dim
from train.engine import load_autoregressive
from train.routing import image_psnr, patches, probe_images, probe_sets, ridge_readout, set_traces


def features(model, lq, hq, layer: int, task: str) -> dict:
    """Teacher-forced traces -> {"values": (B, L, kv_dim), "stream": (B, L, llm_dim), "final": (B, L, llm_dim)}."""
    trace = set_traces(model, lq, hq, task, [layer])
    return {"values": trace["value"][layer], "stream": trace["lq_stream"][layer], "final": trace["writing"][-1]}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--task", default="denoise")
    p.add_argument("--layer", type=int, default=18)
    p.add_argument("--kv-head", type=int, default=2)
    p.add_argument("--scales", default="0.5,1,2,4,8")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    model = load_autoregressive(args.checkpoint, args.threads, "the embedding-scale probe")
    vision, unscaled = model.vision, model.visual_to_llm
    fit_clean, eval_clean = probe_images("../shared/corpus/train", "skimage", model.image_size)
    (fit_lq, fit_hq, _), (ev_lq, ev_hq, _) = probe_sets(args.task, fit_clean, eval_clean)
    width = head_dim(model.llm.config)
    head = slice(args.kv_head * width, (args.kv_head + 1) * width)
    for s in [float(x) for x in args.scales.split(",")]:
        model.visual_to_llm = lambda *a, s=s, **k: s * unscaled(*a, **k)
        with torch.no_grad():
            fit = features(model, fit_lq, fit_hq, args.layer, args.task)
            ev = features(model, ev_lq, ev_hq, args.layer, args.task)
            fit["values"], ev["values"] = fit["values"][..., head], ev["values"][..., head]
            row = {k: image_psnr(vision, ridge_readout(fit[k], patches(vision, fit_hq))(ev[k]), ev_hq) for k in fit}
        print(f"scale {s:g}: KV head {args.kv_head}'s values at layer {args.layer} {row['values']:.2f} dB, stream "
              f"entering layer {args.layer} {row['stream']:.2f} dB, final writing position {row['final']:.2f} dB",
              flush=True)


if __name__ == "__main__":
    main()
