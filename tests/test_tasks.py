"""The task registry: adding a task is one `Task` entry; a toy degradation and a toy spatial task go through
degrade, tiled restoration and evaluation without any other change."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lm4lv_core import tasks
from lm4lv_core.degrade import degrade, strength_from_level, target
from lm4lv_core.errors import InputError
from lm4lv_core.tasks import REGISTRY, Task, get_task

DARKEN = Task(
    "darken",
    "brighten a darkened photo",
    corrupt=lambda x, s, rng: x * (1 - s),
    random_strength=lambda rng: float(rng.uniform(0, 0.5)),
    fixed_strength=0.3,
    level_strength=lambda level: level * 0.5,
)
TURN = Task("turn", "rotate by 90 degrees clockwise", transpose=Image.Transpose.ROTATE_270)


@pytest.fixture
def toy_tasks(monkeypatch):
    for task in (DARKEN, TURN):
        monkeypatch.setitem(REGISTRY, task.name, task)


def _photo(width=40, height=24, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_registry_describes_every_task():
    assert tasks.TASKS == ("denoise", "deblur", "derain", "depepper", "demask", "rotate", "flip")
    assert tasks.SANITY_TASKS == ("repeat",)
    assert [n for n in REGISTRY if REGISTRY[n].spatial] == ["rotate", "flip"]
    assert [n for n in REGISTRY if REGISTRY[n].mae_r_of_target] == ["rotate", "flip", "repeat"]
    assert tasks.restoration_tasks(["denoise", "rotate", "demask", "flip"]) == ["denoise", "demask"]
    assert all(REGISTRY[n].help for n in REGISTRY)
    with pytest.raises(InputError, match="Unknown task 'sharpen'; choose one of: denoise"):
        get_task("sharpen")


def test_box_matches_the_transposed_image():
    photo = np.arange(7 * 5).reshape(5, 7)  # (H, W): every pixel distinct
    for transpose in Image.Transpose:
        spec = Task("t", "t", transpose=transpose)
        moved = np.asarray(Image.fromarray(photo.astype(np.uint8)).transpose(transpose))
        left, top, right, bottom = spec.box((2, 1, 5, 4), 7, 5)  # the 3 x 3 block at x 2..4, y 1..3
        block = photo[1:4, 2:5]
        assert sorted(moved[top:bottom, left:right].ravel()) == sorted(block.ravel()), transpose


def test_a_toy_task_goes_through_degrade_restore_and_evaluate(toy_tasks, tiny_llm_dir, tiny_vision_dir, tmp_path):
    from lm4lv_core.model import LM4LV
    from lm4lv_core.variants import load_model
    from train.evaluate import main as evaluate

    photo = _photo()
    dark = np.asarray(degrade(photo, "darken", strength="fixed"), dtype=np.float64)
    assert dark.mean() == pytest.approx(0.7 * np.asarray(photo, dtype=np.float64).mean(), abs=1)
    assert np.array_equal(np.asarray(degrade(photo, "darken", seed=3)), np.asarray(degrade(photo, "darken", seed=3)))
    assert strength_from_level("darken", 1.0) == 0.5 and strength_from_level("turn", 1.0) is None
    assert np.array_equal(np.asarray(target(photo, "turn")), np.rot90(np.asarray(photo), k=-1))

    model = LM4LV.build(
        llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=("darken", "turn"), device="cpu", dtype=torch.float32
    )
    model.save_pretrained(tmp_path / "toy", vision_path=tiny_vision_dir)
    loaded = load_model(tmp_path / "toy", device="cpu", dtype=torch.float32)
    turned = loaded.restore(photo, "turn", max_new_tokens=4)  # tiles placed where a clockwise turn puts them
    assert turned.image.size == (24, 40) and turned.mae_r.size == (24, 40)

    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(2):
        _photo(48, 48, seed=i).save(folder / f"{i}.png")
    out = tmp_path / "toy.json"
    evaluate(
        [
            "--images",
            str(folder),
            "--tasks",
            "darken,turn",
            "--json",
            str(out),
            "--checkpoint",
            str(tmp_path / "toy"),
            "--llm",
            tiny_llm_dir,
        ]
    )
    scores = json.loads(out.read_text())["tasks"]
    assert set(scores) == {"darken", "turn"} and "degraded" in scores["darken"]
    assert 12 < scores["darken"]["degraded"]["psnr"] < 20  # 30 % darker random pixels: about 16.5 dB
    # each (image, task) has its own fixed degradation, whatever the other tasks evaluated with it
    evaluate(
        [
            "--images",
            str(folder),
            "--tasks",
            "turn,darken",
            "--json",
            str(out),
            "--checkpoint",
            str(tmp_path / "toy"),
            "--llm",
            tiny_llm_dir,
        ]
    )
    assert json.loads(out.read_text())["tasks"]["darken"]["degraded"] == scores["darken"]["degraded"]


@pytest.mark.parametrize("name", ["rotate", "flip", "denoise"])
def test_source_patches_follow_the_target(name):
    """Task.source_patches: patch j of the target is patch source[j] of the input, on an image whose 4 x 4 patches
    each have their own colour."""
    grid, size = 4, 8
    colours = np.arange(grid * grid, dtype=np.uint8).reshape(grid, grid) * 15
    image = np.repeat(np.repeat(colours, size, 0), size, 1)[..., None].repeat(3, -1)  # (32, 32, 3)
    moved = np.asarray(target(Image.fromarray(image), name))[::size, ::size, 0].reshape(-1)
    np.testing.assert_array_equal(moved, colours.reshape(-1)[get_task(name).source_patches(grid)])
