"""Training on two CPU processes (torchrun, gloo) trains one model: the same as one process on the global batch."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file

from tests.hub_server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(out, llm, vision, data, batch_size: int, processes: int) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "train.train_lm4lv"]
    if processes > 1:
        launcher = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(processes),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(free_port()),
            "-m",
            "train.train_lm4lv",
        ]
    command = launcher + [
        "--llm",
        llm,
        "--vision",
        vision,
        "--data",
        str(data),
        "--out",
        str(out),
        "--tasks",
        "all",
        "--task-readouts",
        "--task-input-adapters",
        "--position-embeddings",
        "--pixel-loss",
        "1",
        "--steps",
        "3",
        "--warmup",
        "1",
        "--batch-size",
        str(batch_size),
        "--ridge-init",
        "0",
        "--probe-every",
        "0",
        "--threads",
        "1",
        "--lr",
        "1e-2",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT)
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(4):
        smooth = rng.random((8, 8, 3)).repeat(12, 0).repeat(12, 1)  # (96, 96, 3): blocks, so crops differ
        Image.fromarray((smooth * 255).astype(np.uint8)).save(folder / f"im{i}.png")
    return folder


def test_two_processes_train_one_model(tmp_path, tiny_llm_dir, tiny_vision_dir, images):
    two = _train(tmp_path / "two", tiny_llm_dir, tiny_vision_dir, images, batch_size=2, processes=2)
    assert "the 2 processes agree" in two.stdout + two.stderr  # every rank holds the same weights at each save
    record = json.load(open(tmp_path / "two" / "lm4lv" / "training.json"))
    assert record["world_size"] == 2 and record["samples"] == 3 * 2 * 2
    _train(tmp_path / "one", tiny_llm_dir, tiny_vision_dir, images, batch_size=4, processes=1)
    a = load_file(str(tmp_path / "two" / "lm4lv" / "heads.safetensors"))
    b = load_file(str(tmp_path / "one" / "lm4lv" / "heads.safetensors"))
    assert a.keys() == b.keys()
    with open(tmp_path / "two" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(float(r["grad_norm"]) > 0 for r in rows)  # every step trained
    for key in a:  # the same global batch: gradients averaged over ranks = the mean over the whole batch
        assert float((a[key] - b[key]).abs().max()) < 1e-4, key
