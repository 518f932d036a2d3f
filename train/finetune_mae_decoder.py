"""Fine-tune the MAE decoder to reconstruct full images from all tokens (encoder frozen unless --train-encoder): L1, plus LPIPS when its
backbone weights are available. The result is the paper's MAE-r vision module.

    python -m train.finetune_mae_decoder --vision runs/mae/vision --data ../shared/corpus/train --out runs/mae_ft
"""
from __future__ import annotations

import argparse
import os

import torch
from torch import nn

from lm4lv_core.vision import VisionModule
from train.data import RandomCrops
from train.engine import add_common_args, make_accelerator, train_loop


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", required=True, help="pretrained ViT-MAE (folder or hub id)")
    p.add_argument("--lpips-weight", type=float, default=1.0, help="weight of the LPIPS term (0: off)")
    p.add_argument("--latent-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the tokens, so that small regression errors decode gracefully")
    p.add_argument("--train-encoder", action="store_true",
                   help="also train the encoder (a full autoencoder fine-tune; NOT the paper's recipe, which keeps the "
                        "MAE encoder frozen): a lever for the reconstruction ceiling. Invalidates LM4LV heads trained "
                        "on the old encoder")
    add_common_args(p, lr=5e-4, batch_size=64, steps=3000)
    return p.parse_args(argv)


class Reconstructor(nn.Module):
    """Images in [0, 1] -> all tokens (optionally noised) -> reconstruction; what the fine-tune optimises."""

    def __init__(self, vision: VisionModule, train_encoder: bool = False):
        super().__init__()
        self.vision = vision
        self.train_encoder = train_encoder
        vision.mae.vit.requires_grad_(train_encoder)

    def forward(self, images: torch.Tensor, latent_noise: float = 0.0) -> torch.Tensor:
        vision = self.vision
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_encoder):
            tokens = vision.encode(vision.normalize(images))  # (B, L+1, D)
        if latent_noise > 0:
            tokens = tokens + latent_noise * torch.randn_like(tokens)
        return vision.decode(tokens) * vision.std + vision.mean  # (B, 3, S, S)


def load_lpips(weight: float, device):
    """The LPIPS module, or None with the reason printed (offline its backbone weights cannot be fetched)."""
    if weight <= 0:
        return None
    try:
        import lpips  # needs torchvision and downloads its backbone on first use

        return lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)
    except Exception as exc:  # ImportError, or no network for the backbone weights
        print(f"LPIPS is off: {type(exc).__name__}: {exc}. Training with L1 only.")
        return None


def main(argv=None):
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    torch.manual_seed(args.seed)
    vision = VisionModule.from_pretrained(args.vision)
    reconstructor = Reconstructor(vision, train_encoder=args.train_encoder)
    crops = RandomCrops(args.data, vision.image_size, seed=args.seed + 1)
    lpips_fn = load_lpips(args.lpips_weight, accelerator.device)

    def loss_fn(model, step):
        images = crops.batch(step, args.batch_size, accelerator.process_index, accelerator.num_processes)
        images = images.to(accelerator.device)  # (B, 3, S, S) in [0, 1]
        recon = model(images, args.latent_noise)  # (B, 3, S, S), unclamped [0, 1] scale
        terms = {"l1": (recon - images).abs().mean()}
        terms["loss"] = terms["l1"]
        if lpips_fn is not None:
            terms["lpips"] = lpips_fn(recon * 2 - 1, images * 2 - 1).mean()
            terms["loss"] = terms["loss"] + args.lpips_weight * terms["lpips"]
        with torch.no_grad():
            mse = ((recon.clamp(0, 1) - images) ** 2).mean()
            terms["psnr"] = -10 * torch.log10(mse)
        return terms

    def export(out):
        vision.save_pretrained(os.path.join(out, "vision"))

    last = train_loop(args, accelerator, reconstructor, loss_fn, export, desc="MAE decoder fine-tune")
    accelerator.print(f"done: {last}; vision module in {os.path.join(args.out, 'vision')}")


if __name__ == "__main__":
    main()
