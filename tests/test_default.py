"""End-to-end checks with the real embedded default (SmolLM2-135M-Instruct from the installed wheel)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from lm4lv_core.llm import load_llm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "app", "examples", "rocket.png")


@pytest.fixture(scope="module")
def smollm():
    return load_llm(None, dtype=torch.float32)


def test_embedded_llm_answers_offline(smollm):
    model, tokenizer = smollm
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=20, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_bf16_stays_close_to_fp32(smollm):
    model, tokenizer = smollm
    ids = tokenizer("A frozen language model restores images.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        ref = model.base_model(input_ids=ids).last_hidden_state
        bf16 = model.to(torch.bfloat16).base_model(input_ids=ids).last_hidden_state.float()
        model.to(torch.float32)
    cosine = torch.nn.functional.cosine_similarity(ref, bf16, dim=-1)
    assert cosine.min() > 0.98


def test_default_model_restores(default_model, photo):
    result = default_model.restore(photo, "denoise", mode="resize")
    assert result.image.size == (default_model.image_size,) * 2
    assert result.tokens.shape == (default_model.num_visual_tokens, default_model.vision.dim)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lm4lv_core", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_cli_restore_and_degrade(tmp_path):
    degraded = tmp_path / "rocket_noisy.png"
    run = _cli("degrade", EXAMPLE, "--task", "denoise", "--seed", "1", "--out", str(degraded))
    assert run.returncode == 0 and degraded.is_file()
    bad = tmp_path / "broken.png"
    bad.write_text("not an image")
    run = _cli("restore", str(degraded), str(bad), "--task", "denoise", "--out", str(tmp_path / "out"))
    assert run.returncode != 0  # one input was bad
    assert "broken.png: this is not an image file" in run.stderr and "Traceback" not in run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1 and {"input", "task", "output", "mae_r", "seconds"} <= set(lines[0])
    assert (tmp_path / "out" / "rocket_noisy_denoise.png").is_file()
    assert (tmp_path / "out" / "rocket_noisy_denoise_mae_r.png").is_file()
    run = _cli("restore", str(bad), "--task", "sharpen", "--out", str(tmp_path / "out"))
    assert run.returncode == 2 and "invalid choice" in run.stderr
    run = _cli(
        "restore",
        str(degraded),
        "--task",
        "denoise",
        "--out",
        str(tmp_path / "x"),
        "--checkpoint",
        str(tmp_path / "missing"),
    )
    assert run.returncode == 2 and "does not exist" in run.stderr and "Traceback" not in run.stderr
