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

from lm4lv_core.degrade import degrade, target
from lm4lv_core.images import IMAGE_EXTENSIONS, load_image
from lm4lv_core.tasks import REGISTRY, SANITY_TASKS, TASKS, get_task
from train.batched_degradations import degrade_batch


def list_images(root: str) -> list[str]:
    """Every image file under `root`, sorted, so that the data order does not depend on the file system."""
    if not os.path.isdir(root):
        raise SystemExit(f"Training data folder {root} does not exist.")
    files = sorted(
        os.path.join(d, f)
        for d, _, fs in os.walk(root)
        for f in fs
        if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise SystemExit(f"No images found under {root}.")
    return files


class RandomCrops:
    """Deterministic stream of (3, S, S) float crops in [0, 1]; crop side = scale * shorter image side."""

    def __init__(
        self, root: str, size: int, seed: int = 0, min_scale: float = 0.06, max_scale: float = 1.0, cache_mb: int = 4096
    ):
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


SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")  # Table 2's evaluation photos


def parse_tasks(text: str) -> list[str]:
    tasks = list(TASKS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in TASKS + SANITY_TASKS]
    if unknown:
        raise SystemExit(f"Unknown task(s) {unknown}; choose from {TASKS + SANITY_TASKS} or 'all'.")
    return tasks


def make_pairs(
    crops: RandomCrops,
    vision,
    step: int,
    batch_size: int,
    tasks: list[str],
    seed: int,
    rank=0,
    world=1,
    degradations: str = "numpy",
):
    """Batch `step`: (lq, hq) visual tokens (B, N, D) and the task of each example (uniform over tasks), degraded
    image by image with `degrade` ("numpy") or as one batch on the vision module's device ("torch")."""
    clean = crops.batch(step, batch_size, rank, world)  # (B, 3, S, S) in [0, 1]
    first = (step * world + rank) * batch_size
    rngs = [np.random.default_rng((seed, first + j, 7)) for j in range(batch_size)]
    names = [tasks[int(rng.integers(len(tasks)))] for rng in rngs]
    if degradations == "torch":
        device = vision.mean.device
        generator = torch.Generator(device).manual_seed(int(np.random.default_rng((seed, first, 11)).integers(2**62)))
        inputs, targets = degrade_batch(clean.to(device), names, generator)  # (B, 3, S, S) in [0, 1]
    else:
        images = [(c.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for c in clean]
        inputs = np.stack(
            [np.asarray(degrade(im, task, seed=int(rng.integers(2**31)))) for im, task, rng in zip(images, names, rngs)]
        )  # (B, S, S, 3) uint8
        targets = np.stack([np.asarray(target(im, task)) for im, task in zip(images, names)])
    with torch.no_grad():  # the vision module's tensor entries: uint8 (B, S, S, 3) or float (B, 3, S, S) batches
        lq = vision.encode(vision.preprocess(inputs))
        hq = vision.encode(vision.preprocess(targets))
    return lq, hq, names


def load_eval_images(spec: str, limit: int | None) -> list[tuple[str, Image.Image]]:
    if spec == "skimage":
        from skimage import data

        arrays = {
            name: (data.stereo_motorcycle()[0] if name == "motorcycle_left" else getattr(data, name)())
            for name in SKIMAGE_PHOTOS
        }
        images = [(name, Image.fromarray(a).convert("RGB")) for name, a in arrays.items()]
    else:
        images = [(os.path.relpath(p, spec), load_image(p).image) for p in list_images(spec)]
    return images[:limit] if limit else images


def degradation_seed(seed: int, image_index: int, task: str) -> int:
    """The fixed seed of one (image, task) degradation: it depends on the task's name (its place in the registry, the
    seven in Table 2's order), not on which other tasks are evaluated with it."""
    return seed * 1_000_003 + image_index * 101 + list(REGISTRY).index(get_task(task).name)
