"""Seeded, deterministic degradations with the paper's parameters, and the reference each task is scored against.

| task     | input made from the clean image                       | random strength (paper)      | fixed (evaluation)   |
| denoise  | + Gaussian noise                                      | sigma ~ U[0, 50/255]         | sigma = 25/255       |
| deblur   | Gaussian blur, k x k kernel, sigma = OpenCV's default | k ~ {1, 3, 5, 7}             | k = 5                |
| derain   | synthetic rain streaks (below)                        | amount ~ U[0, 20]            | amount = 10          |
| depepper | a fraction of pixels set to black                     | fraction ~ U[0, 0.1]         | fraction = 0.05      |
| demask   | 4x4-pixel blocks set to black                         | rate 0.1                     | rate 0.1             |
| rotate   | none (the target is rotated 90 degrees counter-clockwise)                                     |
| flip     | none (the target is flipped horizontally)                                                     |

Rain streaks: `amount` is the number of streaks per 64x64 pixels. All streaks of an image share a direction drawn
from U[-30, 30] degrees off vertical (each streak jitters +-5 degrees); each starts at a uniform random position, has
a length of U[0.1, 0.25] x the image's shorter side and a brightness of U[0.5, 0.9]; they are drawn 1 px wide
(scaled with the image size) on a black layer, softened with a 3x3 box blur, and screen-blended onto the image:
out = img + layer * (1 - img).
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.ndimage import convolve1d

from .errors import InputError
from .heads import SANITY_TASKS, TASKS

DEFAULT_STRENGTH = {"denoise": 25 / 255, "deblur": 5, "derain": 10.0, "depepper": 0.05, "demask": 0.1}
SPATIAL_TASKS = ("rotate", "flip")


def check_task(task: str) -> str:
    if task not in TASKS + SANITY_TASKS:
        raise InputError(f"Unknown task {task!r}; choose one of: {', '.join(TASKS)}.")
    return task


def sample_strength(task: str, rng: np.random.Generator):
    """The paper's random strength for a task (None for tasks without one)."""
    if task == "denoise":
        return float(rng.uniform(0, 50 / 255))
    if task == "deblur":
        return int(rng.choice([1, 3, 5, 7]))
    if task == "derain":
        return float(rng.uniform(0, 20))
    if task == "depepper":
        return float(rng.uniform(0, 0.1))
    if task == "demask":
        return 0.1
    return None


def strength_from_level(task: str, level: float):
    """One 0..1 dial for every task: 0 = no degradation, 1 = the paper's maximum (deblur: the largest kernel)."""
    level = float(np.clip(level, 0.0, 1.0))
    if task == "denoise":
        return level * 50 / 255
    if task == "deblur":
        return (1, 3, 5, 7)[int(round(level * 3))]
    if task == "derain":
        return level * 20.0
    if task == "depepper":
        return level * 0.1
    if task == "demask":
        return level * 0.2  # the paper's fixed rate 0.1 sits at level 0.5
    return None


def degrade(image: Image.Image | np.ndarray, task: str, seed: int = 0, strength=None) -> Image.Image:
    """The model's input for `task`: a degraded copy of the clean RGB image (unchanged for rotate, flip, repeat).

    `strength=None` draws the paper's random strength from the seed; `"fixed"` uses DEFAULT_STRENGTH.
    """
    check_task(task)
    x = _as_float(image)  # (H, W, 3) in [0, 1]
    rng = np.random.default_rng(seed)
    if strength == "fixed":
        strength = DEFAULT_STRENGTH.get(task)
    elif strength is None:
        strength = sample_strength(task, rng)
    if task == "denoise":
        x = x + rng.normal(0.0, float(strength), x.shape)
    elif task == "deblur":
        x = gaussian_blur(x, int(strength))
    elif task == "derain":
        x = add_rain(x, float(strength), rng)
    elif task == "depepper":
        x = np.where(rng.random(x.shape[:2])[..., None] < float(strength), 0.0, x)
    elif task == "demask":
        x = mask_blocks(x, float(strength), rng)
    return _to_image(x)


def target(image: Image.Image | np.ndarray, task: str) -> Image.Image:
    """The reference an output is scored against: the clean image, rotated or flipped for the spatial tasks."""
    check_task(task)
    clean = _to_image(_as_float(image))
    if task == "rotate":
        return clean.transpose(Image.Transpose.ROTATE_90)
    if task == "flip":
        return clean.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return clean


def gaussian_blur(x: np.ndarray, kernel_size: int) -> np.ndarray:
    """Separable Gaussian blur of (H, W, 3) with a k x k kernel (k odd; 1 = identity), reflecting at the borders."""
    if kernel_size <= 1:
        return x
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8  # OpenCV's default for a given kernel size
    r = np.arange(kernel_size) - kernel_size // 2
    k = np.exp(-(r**2) / (2 * sigma**2))
    k /= k.sum()
    return convolve1d(convolve1d(x, k, axis=0, mode="reflect"), k, axis=1, mode="reflect")


def add_rain(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    height, width = x.shape[:2]
    count = int(round(amount * height * width / (64 * 64)))
    if count == 0:
        return x
    scale = max(1, round(min(height, width) / 128))
    layer = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(layer)
    angle = np.deg2rad(rng.uniform(-30, 30))
    for _ in range(count):
        a = angle + np.deg2rad(rng.uniform(-5, 5))
        length = rng.uniform(0.1, 0.25) * min(height, width)
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        x1, y1 = x0 + length * np.sin(a), y0 + length * np.cos(a)
        draw.line([(x0, y0), (x1, y1)], fill=int(255 * rng.uniform(0.5, 0.9)), width=scale)
    streaks = np.asarray(layer.filter(ImageFilter.BoxBlur(1)), dtype=np.float64)[..., None] / 255.0
    return x + streaks * (1 - x)


def mask_blocks(x: np.ndarray, rate: float, rng: np.random.Generator, block: int = 4) -> np.ndarray:
    height, width = x.shape[:2]
    grid = rng.random(((height + block - 1) // block, (width + block - 1) // block)) < rate
    mask = np.kron(grid, np.ones((block, block), dtype=bool))[:height, :width]
    return np.where(mask[..., None], 0.0, x)


def _as_float(image) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[-1] != 3:
        raise InputError(f"degrade expects an RGB uint8 image, got {array.dtype} {array.shape}.")
    return array.astype(np.float64) / 255.0


def _to_image(x: np.ndarray) -> Image.Image:
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))
