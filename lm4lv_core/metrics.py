"""PSNR and SSIM on RGB uint8 images (arrays or PIL), as in the restoration literature.

SSIM uses an 11x11 Gaussian window with sigma 1.5 (Wang et al. 2004), K1 = 0.01, K2 = 0.03, computed per channel and
averaged. Both take an optional border crop and can score the Y channel (ITU-R BT.601) instead of RGB.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import correlate1d


def _prepare(a, b, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise ValueError("metrics expect uint8 images")
    a, b = a.astype(np.float64), b.astype(np.float64)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    if crop_border:
        a, b = (
            a[crop_border:-crop_border, crop_border:-crop_border],
            b[crop_border:-crop_border, crop_border:-crop_border],
        )
    if y_channel:
        a, b = _to_y(a), _to_y(b)
    return a, b


def _to_y(x: np.ndarray) -> np.ndarray:
    """RGB (0-255) -> Y of YCbCr (BT.601, 16-235), shape (H, W, 1)."""
    return (16.0 + x @ np.array([65.481, 128.553, 24.966]) / 255.0)[..., None]


def psnr(a, b, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB (data range 255); `inf` for identical images."""
    a, b = _prepare(a, b, crop_border, y_channel)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    r = np.arange(size) - size // 2
    w = np.exp(-(r**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(a, b, crop_border: int = 0, y_channel: bool = False) -> float:
    """Mean structural similarity over the valid (unpadded) region, averaged over channels."""
    a, b = _prepare(a, b, crop_border, y_channel)
    window = _gaussian_window()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    pad = window.size // 2

    def blur(x):  # separable Gaussian filter over H and W, cropped to the valid region
        y = correlate1d(correlate1d(x, window, axis=0, mode="reflect"), window, axis=1, mode="reflect")
        return y[pad:-pad, pad:-pad] if min(x.shape[:2]) > 2 * pad else y

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean(axis=(0, 1)).mean())
