"""The Space's file set: what `app.deploy_space --dry-run` lists, copied alone into an empty folder, serves /restore."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from app.deploy_space import ROOT, listing, space_files
from tests.hub_server import free_port

EXAMPLE = os.path.join(ROOT, "app", "examples", "coffee.png")


def test_dry_run_lists_only_what_the_demo_needs():
    paths = space_files()
    assert {
        "app.py",
        "requirements.txt",
        "README.md",
        "LICENSE",
        "checkpoints/mae-tiny/model.safetensors",
        "checkpoints/lm4lv-smollm2/heads.safetensors",
    } <= set(paths)
    assert not [p for p in paths if p.startswith(("train/", "tests/", "research/", "docs/", "bench/"))]
    assert listing(paths).splitlines()[-1].endswith(f"total, {len(paths)} files")


def test_checkpoints_hold_only_what_the_product_loads():
    """Every folder of checkpoints/ is a shipped checkpoint (`checkpoint.SHIPPED`) or the vision module they load,
    each with its model card; experiment checkpoints live in research/checkpoints/."""
    from lm4lv_core.checkpoint import DEFAULT_VISION, SHIPPED

    product = {path.name for path in SHIPPED.values()} | {DEFAULT_VISION.name}
    folders = [
        name
        for name in os.listdir(os.path.join(ROOT, "checkpoints"))
        if os.path.isdir(os.path.join(ROOT, "checkpoints", name))
    ]
    assert set(folders) <= product, set(folders) - product
    assert all(os.path.isfile(os.path.join(ROOT, "checkpoints", name, "README.md")) for name in folders)


def test_front_matter_preloads_every_shipped_checkpoints_llm():
    """The Space's build downloads the pinned GGUF of each shipped checkpoint's frozen LLM (README front matter)."""
    import yaml

    from lm4lv_core.checkpoint import SHIPPED, read_raw_config
    from lm4lv_core.llm import PINNED_LLMS

    with open(os.path.join(ROOT, "README.md")) as f:
        front = yaml.safe_load(f.read().split("---")[1])
    preloaded = {tuple(line.split()[:2]) for line in front["preload_from_hub"]}
    for name, folder in SHIPPED.items():
        pinned = PINNED_LLMS[read_raw_config(str(folder))["llm"]]
        assert (pinned.hub_repo, pinned.filename) in preloaded, name
        assert pinned.hub_repo in front["models"], name


def test_space_file_set_alone_serves_restore(tmp_path):
    from gradio_client import Client, handle_file

    space = tmp_path / "space"
    for path in space_files():
        os.makedirs(space / os.path.dirname(path), exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, path), space / path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    server = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=space,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        client = None
        for _ in range(240):
            if server.poll() is not None:
                raise AssertionError(server.stderr.read()[-3000:])
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001 (not listening yet)
                time.sleep(0.5)
        assert client is not None, "the Space did not start within 120 s"
        restored, mae_r, info = client.predict(handle_file(EXAMPLE), "denoise", None, False, api_name="/restore")
        assert os.path.isfile(restored) and os.path.isfile(mae_r) and info["task"] == "denoise"
    finally:
        server.terminate()
        server.wait(timeout=30)
