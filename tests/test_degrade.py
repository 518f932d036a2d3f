import numpy as np
import pytest
from PIL import Image

from lm4lv_core.degrade import DEFAULT_STRENGTH, degrade, sample_strength, target
from lm4lv_core.errors import InputError
from lm4lv_core.tasks import TASKS


@pytest.fixture
def clean():
    rng = np.random.default_rng(3)
    base = np.linspace(40, 200, 64)[None, :, None] * np.ones((64, 64, 3))
    return Image.fromarray(np.clip(base + rng.normal(0, 5, base.shape), 0, 255).astype(np.uint8))


@pytest.mark.parametrize("task", TASKS)
def test_deterministic_per_seed(clean, task):
    a, b = np.asarray(degrade(clean, task, seed=5)), np.asarray(degrade(clean, task, seed=5))
    assert np.array_equal(a, b)
    if task in ("denoise", "derain", "depepper", "demask"):
        assert not np.array_equal(a, np.asarray(degrade(clean, task, seed=6)))


def test_strength_ranges():
    rng = np.random.default_rng(0)
    draws = {t: [sample_strength(t, rng) for _ in range(400)] for t in TASKS}
    assert 0 <= min(draws["denoise"]) and max(draws["denoise"]) <= 50 / 255
    assert set(draws["deblur"]) == {1, 3, 5, 7}
    assert 0 <= min(draws["derain"]) and max(draws["derain"]) <= 20 and max(draws["derain"]) > 15
    assert 0 <= min(draws["depepper"]) and max(draws["depepper"]) <= 0.1
    assert set(draws["demask"]) == {0.1}


def test_fixed_strengths_do_what_they_say(clean):
    x = np.asarray(clean, dtype=np.float64)
    noisy = np.asarray(degrade(clean, "denoise", strength="fixed"), dtype=np.float64)
    assert (noisy - x).std() == pytest.approx(DEFAULT_STRENGTH["denoise"] * 255, rel=0.1)
    pepper = np.asarray(degrade(clean, "depepper", seed=1, strength=0.05))
    assert (pepper.max(-1) == 0).mean() == pytest.approx(0.05, abs=0.015)
    masked = np.asarray(degrade(clean, "demask", seed=1, strength="fixed"))
    black = masked.max(-1) == 0
    assert black.mean() == pytest.approx(0.1, abs=0.04)
    assert all(
        black[y : y + 4, x : x + 4].all() or not black[y : y + 4, x : x + 4].any()
        for y in range(0, 64, 4)
        for x in range(0, 64, 4)
    )  # whole 4x4 blocks
    blurred = np.asarray(degrade(clean, "deblur", strength=7), dtype=np.float64)
    assert np.abs(np.diff(blurred, axis=0)).mean() < np.abs(np.diff(x, axis=0)).mean()
    assert np.array_equal(np.asarray(degrade(clean, "deblur", strength=1)), np.asarray(clean))
    rain = np.asarray(degrade(clean, "derain", seed=2, strength=20), dtype=np.float64)
    assert (rain >= x - 1e-9).all() and (rain > x + 20).mean() > 0.01  # streaks only brighten


def test_spatial_targets(clean):
    assert np.array_equal(np.asarray(degrade(clean, "rotate", seed=1)), np.asarray(clean))
    assert np.array_equal(np.asarray(target(clean, "rotate")), np.rot90(np.asarray(clean)))
    assert np.array_equal(np.asarray(target(clean, "flip")), np.asarray(clean)[:, ::-1])
    assert np.array_equal(np.asarray(target(clean, "denoise")), np.asarray(clean))


def test_unknown_task(clean):
    with pytest.raises(InputError, match="Unknown task"):
        degrade(clean, "sharpen")
