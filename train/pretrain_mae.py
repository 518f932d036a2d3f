"""MAE pretraining of a small ViT-MAE from scratch: mask ratio 0.75, pixel targets, no norm_pix_loss.

python -m train.pretrain_mae --data ../shared/corpus/train --out runs/mae --steps 6000
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from lm4lv_core.vision import PRESETS, VisionConfig, VisionModule
from train.data import RandomCrops
from train.engine import add_common_args, make_accelerator, train_loop


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny", help="size of the ViT-MAE")
    p.add_argument("--mask-ratio", type=float, default=0.75, help="fraction of patches masked")
    size = p.add_argument_group("architecture (each overrides the preset's value)")
    for field in dataclasses.fields(VisionConfig):
        if field.type in ("int", int):
            size.add_argument(
                "--" + field.name.replace("_", "-"),
                type=int,
                default=None,
                help=f"ViTMAEConfig.{field.name} (tiny: {getattr(PRESETS['tiny'], field.name)})",
            )
    add_common_args(p, lr=1.5e-3, batch_size=64, steps=6000)
    return p.parse_args(argv)


def vision_config(args) -> VisionConfig:
    """The preset with the architecture flags given on the command line applied."""
    overrides = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(VisionConfig)
        if getattr(args, f.name, None) is not None
    }
    return dataclasses.replace(PRESETS[args.preset], **overrides)


def main(argv=None):
    args = parse_args(argv)
    accelerator = make_accelerator(args)
    vision = VisionModule.from_config(vision_config(args), seed=args.seed)
    crops = RandomCrops(args.data, vision.image_size, seed=args.seed)

    def loss_fn(model, step):
        images = crops.batch(step, args.batch_size, accelerator.process_index, accelerator.num_processes)
        pixels = vision.normalize(images.to(accelerator.device))
        with vision.masking(args.mask_ratio):
            out = model(pixel_values=pixels)  # model: the ViTMAEForPreTraining
        return {"loss": out.loss}

    def export(out):
        vision.save_pretrained(os.path.join(out, "vision"))

    last = train_loop(args, accelerator, vision.mae, loss_fn, export, desc="MAE pretraining")
    accelerator.print(f"done: {last}; vision module in {os.path.join(args.out, 'vision')}")


if __name__ == "__main__":
    main()
