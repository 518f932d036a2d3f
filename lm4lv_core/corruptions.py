"""Pixel operations behind the degradations: (H, W, 3) float images in [0, 1], seeded by a numpy Generator.

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


def add_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise of std `sigma` (unclipped; the image conversion clips)."""
    return x + rng.normal(0.0, float(sigma), x.shape)


def gaussian_blur(x: np.ndarray, kernel_size: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Separable Gaussian blur of (H, W, 3) with a k x k kernel (k odd; 1 = identity), reflecting at the borders."""
    kernel_size = int(kernel_size)
    if kernel_size <= 1:
        return x
    sigma = 0.3 * ((kernel_size - 1) * 0.5 - 1) + 0.8  # OpenCV's default for a given kernel size
    r = np.arange(kernel_size) - kernel_size // 2
    k = np.exp(-(r**2) / (2 * sigma**2))
    k /= k.sum()
    return convolve1d(convolve1d(x, k, axis=0, mode="reflect"), k, axis=1, mode="reflect")


def add_rain(x: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    """Synthetic rain streaks (module docstring), `amount` streaks per 64 x 64 pixels."""
    height, width = x.shape[:2]
    count = int(round(float(amount) * height * width / (64 * 64)))
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


def add_pepper(x: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A `fraction` of the pixels set to black."""
    return np.where(rng.random(x.shape[:2])[..., None] < float(fraction), 0.0, x)


def mask_blocks(x: np.ndarray, rate: float, rng: np.random.Generator, block: int = 4) -> np.ndarray:
    """Each `block` x `block` cell of a grid set to black with probability `rate`."""
    height, width = x.shape[:2]
    grid = rng.random(((height + block - 1) // block, (width + block - 1) // block)) < float(rate)
    mask = np.kron(grid, np.ones((block, block), dtype=bool))[:height, :width]
    return np.where(mask[..., None], 0.0, x)
