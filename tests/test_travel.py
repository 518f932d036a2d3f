"""Checkpoints that travel: a folder copied anywhere, and a Hub round trip (against the local Hub stand-in)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from lm4lv_core import LM4LV
from tests.hub_server import HubStandIn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_checkpoint_copied_alone_restores_through_the_cli(tmp_path, photo):
    """The shipped checkpoint names its vision module as ../mae-tiny; copied elsewhere it finds the shipped one by
    its fingerprint."""
    alone = tmp_path / "somewhere" / "lm4lv-smollm2"
    shutil.copytree(os.path.join(ROOT, "checkpoints", "lm4lv-smollm2"), alone)
    assert not (alone.parent / "mae-tiny").exists()
    photo.resize((64, 64)).save(tmp_path / "in.png")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "lm4lv_core",
            "restore",
            str(tmp_path / "in.png"),
            "--task",
            "denoise",
            "--checkpoint",
            str(alone),
            "--mode",
            "resize",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = json.loads(done.stdout.strip().splitlines()[-1])
    assert os.path.isfile(line["output"]) and line["task"] == "denoise"


def test_hub_round_trip(tiny_model, tiny_vision_dir, tmp_path, monkeypatch):
    """push_to_hub uploads the heads, the config and the vision module; from_pretrained(repo_id) loads the same model
    from the Hub alone (HF_HOME empty, the local vision folder out of reach)."""
    hub = HubStandIn()
    card = tmp_path / "card.md"
    card.write_text("---\nlibrary_name: lm4lv\nlicense: mit\npipeline_tag: image-to-image\n---\n# tiny\n")
    with hub.serve() as endpoint:
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        tiny_model.push_to_hub("someone/tiny-lm4lv", model_card=card)
        files = hub.files("someone/tiny-lm4lv")
        assert {
            "heads.safetensors",
            "lm4lv_config.json",
            "README.md",
            "vision/config.json",
            "vision/model.safetensors",
        } <= set(files)
        assert json.loads(files["lm4lv_config.json"])["vision"] == "vision"
        loaded = LM4LV.from_pretrained("someone/tiny-lm4lv", device="cpu", dtype=torch.float32)
        assert any(r.startswith("GET /someone/tiny-lm4lv/resolve/") for r in hub.requests)
    assert loaded.vision.fingerprint() == tiny_model.vision.fingerprint()
    for name, value in tiny_model.heads.state_dict().items():
        torch.testing.assert_close(loaded.heads.state_dict()[name], value)
    lq = torch.randn(1, tiny_model.num_visual_tokens, tiny_model.vision.dim, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(
        loaded.forward_loss(lq, lq, ["denoise"])["pred"].detach().numpy(),
        tiny_model.forward_loss(lq, lq, ["denoise"])["pred"].detach().numpy(),
        atol=1e-6,
    )
