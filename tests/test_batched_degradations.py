"""train/batched_degradations.py against the numpy degradations users get from `degrade`: exact where the operation
allows, the same distributions elsewhere."""

import numpy as np
import pytest
import torch

from lm4lv_core import corruptions
from lm4lv_core.degrade import target
from lm4lv_core.tasks import REGISTRY
from train.batched_degradations import add_rain, degrade_batch, gaussian_kernel, mask_blocks, separable_blur


def _batch(count=8, seed=0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (count, 3, 64, 64))).float() / 255


@pytest.mark.parametrize("size", [3, 5, 7])
def test_blur_matches_scipy(size):
    x = np.random.default_rng(1).random((64, 48, 3))
    ours = separable_blur(torch.from_numpy(x).permute(2, 0, 1)[None].float(), gaussian_kernel(size))
    np.testing.assert_allclose(ours[0].permute(1, 2, 0).numpy(), corruptions.gaussian_blur(x, size), atol=1e-6)


def test_spatial_targets_and_quantisation_are_exact():
    clean = _batch(2)
    inputs, targets = degrade_batch(clean, ["rotate", "flip"], torch.Generator().manual_seed(0))
    for i, task in enumerate(["rotate", "flip"]):
        image = (clean[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        expected = np.asarray(target(image, task)).astype(np.float32) / 255
        np.testing.assert_array_equal(targets[i].permute(1, 2, 0).numpy(), expected)
        np.testing.assert_array_equal(inputs[i].numpy(), clean[i].numpy())
    noisy, _ = degrade_batch(clean, ["denoise", "denoise"], torch.Generator().manual_seed(0))
    assert torch.equal((noisy * 255).round() / 255, noisy) and noisy.min() >= 0 and noisy.max() <= 1


def test_strength_distributions_match_the_registry():
    """Noise variance, pepper fraction, blur kernels and mask geometry over many draws, on mid-grey images (no
    clipping), against the registry's random strengths."""
    # the torch path draws U[0, max] through the app's dial (level 1 = the paper's maximum): the dial must stay so
    assert [REGISTRY[t].level_strength(1.0) for t in ("denoise", "derain", "depepper")] == [50 / 255, 20.0, 0.1]
    generator, grey = torch.Generator().manual_seed(0), torch.full((400, 3, 32, 32), 0.5)
    noisy, _ = degrade_batch(grey, ["denoise"] * 400, generator)
    expected = (50 / 255) ** 2 / 3 + 1 / (12 * 255**2)  # E[sigma^2] for sigma ~ U[0, 50/255], plus rounding
    assert abs(float(((noisy - 0.5) ** 2).mean()) / expected - 1) < 0.1
    peppered, _ = degrade_batch(grey, ["depepper"] * 400, generator)
    assert abs(float((peppered == 0).float().mean()) - 0.05) < 0.005  # fraction ~ U[0, 0.1]
    masked = mask_blocks(grey, REGISTRY["demask"].fixed_strength, generator)
    blocks = (masked[:, 0] == 0).float().reshape(400, 8, 4, 8, 4)
    assert torch.equal(blocks.amin((2, 4)), blocks.amax((2, 4)))  # whole 4 x 4 blocks
    assert abs(float(blocks.mean()) - 0.1) < 0.01
    edges = torch.zeros(400, 3, 32, 32)
    edges[..., 16:] = 1
    blurred, _ = degrade_batch(edges, ["deblur"] * 400, generator)
    widths = ((blurred[:, 0, 0] > 0) & (blurred[:, 0, 0] < 1)).sum(-1)  # ramp width = kernel size - 1
    assert set(widths.tolist()) == {0, 2, 4, 6}


def test_rain_is_drawn_like_the_numpy_streaks():
    """At the same amount, the streak layer covers about as much of the image, about as brightly."""
    ours = add_rain(torch.zeros(100, 3, 64, 64), torch.full((100,), 10.0), torch.Generator().manual_seed(0))
    theirs = np.stack([corruptions.add_rain(np.zeros((64, 64, 3)), 10.0, np.random.default_rng(s)) for s in range(100)])
    covered, covered_np = float((ours[:, 0] > 0.05).float().mean()), float((theirs[..., 0] > 0.05).mean())
    assert abs(covered / covered_np - 1) < 0.15
    assert abs(float(ours.mean()) / float(theirs.mean()) - 1) < 0.25
    dry = add_rain(torch.zeros(2, 3, 64, 64), torch.zeros(2), torch.Generator())
    assert torch.equal(dry, torch.zeros(2, 3, 64, 64))
