"""Copy a trained run into a shipped checkpoint folder (the last step of a recipe):

    python -m train.publish --checkpoint runs/recipes/lm4lv-gemma3/stage1_refit --to checkpoints/lm4lv-gemma3 \
        [--vision ../mae-tiny]

Loads the run's checkpoint (refusing a mismatched or corrupt one), writes it with `save_pretrained` into `--to`
(the vision module recorded as `--vision`, relative to `--to`), and copies the run's records (training.json,
refit.json, merge.json) beside it. A model card (README.md) already in `--to` is kept. Writes `published.json` into
the run's folder: the mark a recipe's publish step waits for.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil

RECORDS = ("training.json", "refit.json", "merge.json")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the run's checkpoint folder (an LM4LV or control checkpoint)")
    p.add_argument(
        "--vision-module",
        action="store_true",
        help="--checkpoint is a vision module (a ViT-MAE folder), published as it is",
    )
    p.add_argument("--to", required=True, help="the shipped folder, e.g. checkpoints/lm4lv-gemma3")
    p.add_argument("--vision", default="../mae-tiny", help="the vision module's path as recorded, relative to --to")
    args = p.parse_args(argv)
    if args.vision_module:
        from lm4lv_core.vision import VisionModule

        VisionModule.from_pretrained(args.checkpoint).save_pretrained(args.to)
    else:
        from lm4lv_core.variants import load_model

        load_model(args.checkpoint).save_pretrained(args.to, vision_path=args.vision)
    for name in RECORDS:
        if os.path.isfile(os.path.join(args.checkpoint, name)):
            shutil.copyfile(os.path.join(args.checkpoint, name), os.path.join(args.to, name))
    with open(os.path.join(args.checkpoint, "published.json"), "w") as f:  # what a recipe's last step waits for
        json.dump({"to": args.to, "vision": args.vision}, f)
    print(f"published {args.checkpoint} -> {args.to}")


if __name__ == "__main__":
    main()
