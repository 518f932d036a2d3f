"""Training data: random multi-scale crops with flips from any folder of images (recursive).

Sample k of a run is drawn from `numpy.random.default_rng((seed, k))`, so batch `step` is the same whether a run
goes straight through or resumes from a checkpoint, on one process or several (process p of n takes every n-th batch
slot). Decoded images are kept in memory up to `cache_mb`, so a small corpus is read from disk once.
"""
from __future__ import annotations

import os
import warnings
from collections import OrderedDict

import numpy as np
import torch
from PIL import Image

from lm4lv_core.images import IMAGE_EXTENSIONS


def list_images(root: str) -> list[str]:
    """Every image file under `root`, sorted, so that the data order does not depend on the file system."""
    if not os.path.isdir(root):
        raise SystemExit(f"Training data folder {root} does not exist.")
    files = sorted(
        os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise SystemExit(f"No images found under {root}.")
    return files


class RandomCrops:
    """Deterministic stream of (3, S, S) float crops in [0, 1]; crop side = scale * shorter image side."""

    def __init__(self, root: str, size: int, seed: int = 0, min_scale: float = 0.06, max_scale: float = 1.0,
                 cache_mb: int = 4096):
        self.files = list_images(root)
        self.size, self.seed = size, seed
        self.min_scale, self.max_scale = min_scale, max_scale
        self.cache: OrderedDict[str, Image.Image] = OrderedDict()
        self.unreadable: set[str] = set()
        self.cache_bytes, self.cache_limit = 0, cache_mb * 2**20

    def _image(self, path: str) -> Image.Image:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        with Image.open(path) as im:
            image = im.convert("RGB")
        self.cache[path] = image
        self.cache_bytes += image.width * image.height * 3
        while self.cache_bytes > self.cache_limit and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.cache_bytes -= old.width * old.height * 3
        return image

    def sample(self, k: int) -> torch.Tensor:
        """Sample number k: (3, S, S) in [0, 1]. An unreadable file is reported once and replaced by another."""
        rng = np.random.default_rng((self.seed, k))
        for _ in range(10):
            path = self.files[int(rng.integers(len(self.files)))]
            if path in self.unreadable:
                continue
            try:
                image = self._image(path)
                break
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                self.unreadable.add(path)
                warnings.warn(f"skipping unreadable training image {path}: {exc}", stacklevel=2)
        else:
            raise RuntimeError("too many unreadable training images in a row")
        short = min(image.size)
        # log-uniform scale so that small (detailed) and large (global) crops are equally common
        scale = float(np.exp(rng.uniform(np.log(self.min_scale), np.log(self.max_scale))))
        side = int(np.clip(round(scale * short), min(self.size, short), short))
        x0 = int(rng.integers(0, image.width - side + 1))
        y0 = int(rng.integers(0, image.height - side + 1))
        crop = image.resize((self.size, self.size), Image.Resampling.BICUBIC, box=(x0, y0, x0 + side, y0 + side))
        array = np.asarray(crop, dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            array = array[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)

    def batch(self, step: int, batch_size: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Batch `step` for process `rank` of `world`: (B, 3, S, S) in [0, 1]."""
        first = (step * world + rank) * batch_size
        return torch.stack([self.sample(first + j) for j in range(batch_size)])
