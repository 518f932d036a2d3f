"""Seeded, deterministic degradations with the paper's parameters, and the reference each task is scored against
(each task's degradation and strengths: `lm4lv_core.tasks`; the pixel operations: `lm4lv_core.corruptions`)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import InputError
from .tasks import REGISTRY, TASKS, get_task

DEFAULT_STRENGTH = {n: t.fixed_strength for n, t in REGISTRY.items() if t.fixed_strength is not None}
SPATIAL_TASKS = tuple(n for n in TASKS if REGISTRY[n].spatial)


def check_task(task: str) -> str:
    get_task(task)
    return task


def sample_strength(task: str, rng: np.random.Generator):
    """The paper's random strength for a task (None for tasks without one)."""
    return get_task(task).strength(rng)


def strength_from_level(task: str, level: float):
    """One 0..1 dial for every task: 0 = no degradation, 1 = the paper's maximum (deblur: the largest kernel)."""
    spec = get_task(task)
    return spec.level_strength(float(np.clip(level, 0.0, 1.0))) if spec.level_strength else None


def degrade(image: Image.Image | np.ndarray, task: str, seed: int = 0, strength=None) -> Image.Image:
    """The model's input for `task`: a degraded copy of the clean RGB image (unchanged for rotate, flip, repeat).

    `strength=None` draws the paper's random strength from the seed; `"fixed"` uses the task's fixed strength.
    """
    spec = get_task(task)
    x = _as_float(image)  # (H, W, 3) in [0, 1]
    rng = np.random.default_rng(seed)
    amount = spec.strength(rng, strength)
    if spec.corrupt is not None:
        x = spec.corrupt(x, amount, rng)
    return _to_image(x)


def target(image: Image.Image | np.ndarray, task: str) -> Image.Image:
    """The reference an output is scored against: the clean image, rotated or flipped for the spatial tasks."""
    return get_task(task).transform(_to_image(_as_float(image)))


def _as_float(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(f"degrade expects an RGB uint8 image, got {array.dtype} {array.shape}.")
    return array.astype(np.float64) / 255.0


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))
