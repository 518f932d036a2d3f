"""Bad input through the Python API, the CLI and the app's /restore endpoint: one clear sentence, nothing lost."""

import io
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lm4lv_core.errors import InputError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> expected phrase of the error sentence
BAD = {
    "empty.png": "the file is empty",
    "text.png": "not an image file",
    "truncated.jpg": "truncated or corrupt",
    "bomb.png": "too many pixels",
    "dot.png": "too small",
}


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is text, not pixels")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[:400])
    Image.new("1", (9000, 9000)).save(folder / "bomb.png")  # 81 MP, a few KB on disk
    Image.new("RGB", (1, 1)).save(folder / "dot.png")
    return folder


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """Unusual but valid inputs: restored, with a note."""
    folder = tmp_path_factory.mktemp("odd")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (100, 20000, 3), dtype=np.uint8)).save(
        folder / "strip.png"
    )
    frames = [Image.new("RGB", (40, 40), c) for c in ((200, 10, 10), (10, 10, 200))]
    frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:])
    return folder


@pytest.mark.parametrize("name", sorted(BAD))
def test_python_api(tiny_model, bad_files, name):
    with pytest.raises(InputError, match=BAD[name]) as info:
        tiny_model.restore(str(bad_files / name), "denoise")
    assert name in str(info.value) and "\n" not in str(info.value)


def test_python_api_odd_inputs(tiny_model, odd_files):
    strip = tiny_model.restore(str(odd_files / "strip.png"), "denoise", mode="resize", force_image_after=0)
    assert any("center-cropped from 20000x100" in n for n in strip.notes)
    gif = tiny_model.restore(str(odd_files / "anim.gif"), "flip", force_image_after=0, max_new_tokens=80)
    assert gif.image.size == (40, 40) and any("first frame" in n for n in gif.notes)
    with pytest.raises(InputError, match="Unknown task"):
        tiny_model.restore(str(odd_files / "anim.gif"), "unblur")


def test_cli(bad_files, odd_files, tmp_path):
    out = tmp_path / "out"
    inputs = [str(bad_files / n) for n in sorted(BAD)] + [str(odd_files / "anim.gif")]
    run = subprocess.run(
        [sys.executable, "-m", "lm4lv_core", "restore", *inputs, "--task", "denoise", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert run.returncode != 0 and "Traceback" not in run.stderr
    for name, phrase in BAD.items():
        line = next(text for text in run.stderr.splitlines() if text.startswith(name))
        assert phrase in line
    assert (out / "anim_denoise.png").is_file()  # the good file is still restored
    # a folder: non-images are skipped with a warning, nothing is overwritten, a second run resumes
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(odd_files / "anim.gif").convert("RGB").save(folder / "a.png")
    (folder / "readme.txt").write_text("not an image")
    args = [
        sys.executable,
        "-m",
        "lm4lv_core",
        "restore",
        str(folder),
        "--task",
        "deblur",
        "--out",
        str(folder),
        "--mode",
        "resize",
    ]
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert first.returncode == 0 and "skipping" in first.stderr and "readme.txt" in first.stderr
    assert (folder / "a_deblur.png").is_file() and (folder / "a.png").is_file()
    second = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=600)
    assert second.returncode == 0 and "outputs exist" in second.stderr


@pytest.fixture(scope="module")
def tiny_server(tiny_model):
    from app.service import DemoService
    from app.ui import build_demo

    demo = build_demo(DemoService(tiny_model)).queue(default_concurrency_limit=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_restore_endpoint(tiny_server, bad_files, odd_files):
    from gradio_client import Client, handle_file

    client = Client(tiny_server, verbose=False)
    for name, phrase in BAD.items():
        with pytest.raises(Exception, match=phrase):
            client.predict(handle_file(str(bad_files / name)), "denoise", None, False, api_name="/restore")
    restored, _, info = client.predict(
        handle_file(str(odd_files / "anim.gif")), "denoise", None, False, api_name="/restore"
    )
    assert os.path.isfile(restored) and any("first frame" in n for n in info["notes"])  # still serving


def test_app_refuses_a_bad_checkpoint_at_start(tmp_path):
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "lm4lv_config.json").write_text("{not json")
    for checkpoint, phrase in ((tmp_path / "missing", "does not exist"), (broken, "unreadable")):
        run = subprocess.run(
            [sys.executable, "app.py", "--checkpoint", str(checkpoint)],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
        assert run.returncode == 2 and phrase in run.stderr and "Traceback" not in run.stderr
