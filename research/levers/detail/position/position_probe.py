"""Do our MAE's visual tokens say where they are? A ridge classifier (one-vs-all, 64 patch indices) from a token's
features to its patch index, fitted on the training corpus's photos (64 px, whole) and scored on the five skimage
photos (clean, noisy and as free running generates them for denoise), and on the fitting photos themselves.

    PYTHONPATH=. python research/levers/detail/position/position_probe.py > research/levers/detail/position/position_probe.txt

If position is absent, the LLM can only find the LQ token that an HQ token should copy by content: the addressing
that free running loses (research/NOTEBOOK.md, "Free running loses the copy's addressing").
"""
import glob

import torch
from PIL import Image

from lm4lv_core.images import fit_square
from lm4lv_core.variants import load_model
from train.evaluate import degradation_seed, load_eval_images
from train.refit_readout import fed_tokens
from train.routing import make_set, to_tensor


def accuracy(fit: torch.Tensor, scored: torch.Tensor, ridge: float) -> float:
    """Patch-index accuracy of a ridge one-vs-all classifier fitted on `fit` (B, N, D), scored on `scored`."""
    n = fit.shape[1]
    x, z = fit.reshape(-1, fit.shape[-1]).double(), scored.reshape(-1, scored.shape[-1]).double()
    mean = x.mean(0)
    x, z = x - mean, z - mean
    y = torch.eye(n, dtype=torch.float64).repeat(fit.shape[0], 1)  # (B * N, N) one-hot indices
    w = torch.linalg.solve(x.T @ x + ridge * len(x) * torch.eye(x.shape[1], dtype=torch.float64), x.T @ y)
    return ((z @ w).argmax(1) == torch.arange(n).repeat(scored.shape[0])).double().mean().item()


def main():
    torch.set_num_threads(1)
    model = load_model("checkpoints/lm4lv-smollm2")
    vision = model.vision
    files = [f for f in sorted(glob.glob("../shared/corpus/train/*")) if f.lower().endswith((".png", ".jpg", ".jpeg"))]
    fit_photos = [fit_square(Image.open(f), model.image_size)[0] for f in files]
    eval_photos = [fit_square(im, model.image_size)[0] for _, im in load_eval_images("skimage", None)]
    with torch.no_grad():
        fit = vision.encode(vision.normalize(to_tensor(fit_photos)))[:, 1:]  # (46, 64, D) patch tokens
        clean = vision.encode(vision.normalize(to_tensor(eval_photos)))[:, 1:]
        seeds = [degradation_seed(0, i, "denoise") for i in range(len(eval_photos))]
        lq01, hq01, _ = make_set(eval_photos, "denoise", seeds)
        lq, hq = vision.encode(vision.normalize(lq01)), vision.encode(vision.normalize(hq01))
        generated = fed_tokens(model, lq, hq, ["denoise"] * len(lq), "free")[:, 1:]
    print(f"{len(fit_photos)} fitting photos x {fit.shape[1]} patch tokens; chance {1 / fit.shape[1]:.3f}")
    for ridge in (1e-1, 1e-2, 1e-3):
        print(f"ridge {ridge:g}: fitting photos {accuracy(fit, fit, ridge):.3f} | skimage clean "
              f"{accuracy(fit, clean, ridge):.3f}, noisy {accuracy(fit, lq[:, 1:], ridge):.3f}, "
              f"free-running generation {accuracy(fit, generated, ridge):.3f}")


if __name__ == "__main__":
    main()
