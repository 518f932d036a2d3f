import math

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lm4lv_core.metrics import psnr, ssim


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 40, 3), dtype=np.uint8)
    noise = rng.normal(0, 12, a.shape)
    return a, np.clip(a + noise, 0, 255).astype(np.uint8)


def test_psnr_matches_skimage(pair):
    a, b = pair
    assert psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)


def test_ssim_matches_skimage(pair):
    a, b = pair
    ref = structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1
    )
    assert ssim(a, b) == pytest.approx(ref, abs=1e-6)


def test_identical_images():
    a = np.full((16, 16, 3), 77, np.uint8)
    assert math.isinf(psnr(a, a)) and ssim(a, a) == pytest.approx(1.0)


def test_border_crop_and_y_channel(pair):
    a, b = pair
    assert psnr(a, b, crop_border=4) == pytest.approx(psnr(a[4:-4, 4:-4], b[4:-4, 4:-4]))
    assert np.isfinite(psnr(a, b, y_channel=True)) and 0 < ssim(a, b, y_channel=True) < 1
    with pytest.raises(ValueError):
        psnr(a, b[:-1])


def test_adapter_analysis_figures():
    from train.analyze_adapters import analyze

    scaled_identity = analyze(3.0 * np.eye(16))
    assert scaled_identity["L"] == pytest.approx(0) and scaled_identity["alpha"] == pytest.approx(3)
    random = analyze(np.random.default_rng(0).normal(size=(64, 64)))
    assert random["L"] > 0.9 and random["D"] < 2
    near = analyze(np.eye(64) + 0.01 * np.random.default_rng(1).normal(size=(64, 64)))
    assert near["L"] < 0.1 and near["D"] > 50


def test_adapter_products_pair_each_task_with_its_own_adapters():
    """adapter_out @ adapter_in per task: a shared adapter serves every task, a per-task one only its own."""
    from train.analyze_adapters import adapter_products

    rng = np.random.default_rng(0)
    w_in = {t: rng.normal(size=(8, 4)) for t in ("denoise", "flip")}  # (llm_dim, vision_dim)
    w_out = {t: rng.normal(size=(4, 8)) for t in ("denoise", "flip")}
    shared = adapter_products({"adapter_in.weight": w_in["denoise"], "adapter_out.weight": w_out["denoise"]})
    assert list(shared) == ["shared"] and np.allclose(shared["shared"], w_out["denoise"] @ w_in["denoise"])
    per_out = adapter_products(
        {"adapter_in.weight": w_in["denoise"], **{f"adapter_out.{t}.weight": w for t, w in w_out.items()}}
    )
    assert np.allclose(per_out["flip"], w_out["flip"] @ w_in["denoise"])
    both = adapter_products(
        {
            **{f"adapter_in.{t}.weight": w for t, w in w_in.items()},
            **{f"adapter_out.{t}.weight": w for t, w in w_out.items()},
        }
    )
    assert sorted(both) == ["denoise", "flip"] and np.allclose(both["flip"], w_out["flip"] @ w_in["flip"])
