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
from train.engine import add_common_args, make_accelerator, train_loop, will_resume
from train.least_squares import fit_linear


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vision", required=True, help="pretrained ViT-MAE (folder or hub id)")
    p.add_argument("--lpips-weight", type=float, default=1.0, help="weight of the LPIPS term (0: off)")
    p.add_argument(
        "--latent-noise",
        type=float,
        default=0.0,
        help="std of Gaussian noise added to the tokens, so that small regression errors decode gracefully",
    )
    p.add_argument(
        "--train-encoder",
        action="store_true",
        help="also train the encoder (a full autoencoder fine-tune; NOT the paper's recipe, which keeps the "
        "MAE encoder frozen): a lever for the reconstruction ceiling. Invalidates LM4LV heads trained "
        "on the old encoder",
    )
    p.add_argument(
        "--init-readout",
        type=int,
        default=0,
        help="batches for re-initialising the decoder as the least-squares linear readout of the frozen "
        "encoder features before training (0: keep the pretrained decoder); see init_linear_readout",
    )
    p.add_argument(
        "--readout-ridge",
        type=float,
        default=1e-5,
        help="ridge of that least-squares fit, relative to the sample count: smaller reconstructs clean "
        "images better (64 px MAE: 1e-4 -> 26.6 dB, 1e-5 -> 29.0 dB, 1e-6 -> 29.5 dB) but amplifies "
        "errors in the tokens more (what LM4LV's outputs carry)",
    )
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


@torch.no_grad()
def init_linear_readout(
    vision: VisionModule, batches: list[torch.Tensor], ridge: float = 1e-5, scale: float = 10.0, seed: int = 0
) -> float:
    """Re-initialise the MAE decoder so that it starts as the best linear per-token readout of the encoder features.

    A linear map from the frozen features of a token to its pixels reconstructs photos far better than a decoder
    fine-tuned for CPU-minutes (on our 64 px MAE: 26 dB vs 21 dB), so the decoder starts there: the residual branch
    of every decoder block is zeroed (its attention and MLP output projections, the last linear layers of
    `block.attention` and of the block), `decoder_embed` becomes a scaled orthonormal embedding orthogonal to the
    all-ones direction (so the final LayerNorm is nearly linear in the features and the fixed position embedding is
    small beside them), and `decoder_pred` is fitted by ridge regression on what then reaches it. Training then
    grows the blocks from zero. `batches`: (B, 3, S, S) images in [0, 1]. Returns the PSNR on `batches` afterwards.
    """
    decoder = vision.mae.decoder
    for block in decoder.decoder_layers:
        for branch in (block.attention, block):
            last = [m for m in branch.modules() if isinstance(m, nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()
    out_dim, in_dim = decoder.decoder_embed.weight.shape  # (decoder width, encoder width)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(out_dim, in_dim, generator=generator, dtype=torch.float64)
    basis = basis - basis.mean(0, keepdim=True)  # columns orthogonal to the all-ones direction
    if out_dim > in_dim:
        embed = torch.linalg.qr(basis).Q  # (out_dim, in_dim), orthonormal columns
    else:
        embed = torch.linalg.qr(basis.T).Q.T  # (out_dim, in_dim), orthonormal rows
    decoder.decoder_embed.weight.copy_(scale * embed)
    decoder.decoder_embed.bias.zero_()
    decoder.decoder_norm.weight.fill_(1.0)
    decoder.decoder_norm.bias.zero_()
    seen = []
    hook = decoder.decoder_pred.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0][:, 1:]))
    targets = []
    try:
        for images in batches:
            pixels = vision.normalize(images)
            vision.decode(vision.encode(pixels))
            targets.append(vision.mae.patchify(pixels))  # (B, L, p*p*3) normalised pixels, the decoder's target
    finally:
        hook.remove()
    x = torch.cat([z.reshape(-1, z.shape[-1]) for z in seen])  # (M, out_dim)
    y = torch.cat([t.reshape(-1, t.shape[-1]) for t in targets])  # (M, p*p*3)
    fit_linear(decoder.decoder_pred, x, y, ridge)
    reconstructor = Reconstructor(vision)
    mse = torch.stack([((reconstructor(images).clamp(0, 1) - images) ** 2).mean() for images in batches]).mean()
    return float(-10 * torch.log10(mse))


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
    if args.init_readout > 0 and not will_resume(args):
        fit_crops = RandomCrops(args.data, vision.image_size, seed=args.seed + 10**6)
        fit = init_linear_readout(
            vision,
            [fit_crops.batch(i, args.batch_size) for i in range(args.init_readout)],
            ridge=args.readout_ridge,
            seed=args.seed,
        )
        accelerator.print(
            f"decoder initialised as the linear readout of the encoder features: {fit:.2f} dB on "
            f"{args.init_readout} batches of training crops"
        )

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
