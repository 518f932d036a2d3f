"""A second frozen LLM's mechanics on a tiny random Gemma 3 (the shipped Gemma is the 270M base model): its turn
format where the tokenizer has no chat template, its scaled embeddings, training, generation and the copy view."""

import pytest
import torch

from lm4lv_core import LM4LV
from lm4lv_core.heads import Interface
from lm4lv_core.llm import GEMMA_TURNS, seen_embeddings
from lm4lv_core.sequence import HQ, LQ


@pytest.fixture(scope="module")
def tiny_gemma_dir(tmp_path_factory):
    """A 2-layer random Gemma3ForCausalLM (one sliding-window layer, one global) with a template-less tokenizer
    that has Gemma's turn tokens, as the base model's GGUF converts. Its window (512, as Gemma 3 270M's) holds the
    whole sequence, as it does at the shipped image sizes (64 and 224 px: under 512 positions with the answer)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from lm4lv_core.llm import load_llm

    _, tokenizer = load_llm(None)
    tokenizer.add_special_tokens({"additional_special_tokens": [GEMMA_TURNS.begin, GEMMA_TURNS.end]})
    tokenizer.chat_template = None
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=512,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=512,
        query_pre_attn_scalar=16,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(GEMMA_TURNS.end),
        pad_token_id=0,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_gemma")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_gemma(tiny_gemma_dir, tiny_vision_dir):
    return LM4LV.build(
        llm=tiny_gemma_dir,
        vision=tiny_vision_dir,
        tasks=("denoise", "flip"),
        device="cpu",
        dtype=torch.float32,
        seed=0,
        interface=Interface(whitening=1e-4, position_embeddings=True),
    )


def test_turn_format_and_end_of_turn(tiny_gemma):
    """The layout is rendered with Gemma's turns, and `<end_of_turn>` ends the answer (training) and generation."""
    tokenizer = tiny_gemma.tokenizer
    assert tokenizer.eos_token == GEMMA_TURNS.end
    layout = tiny_gemma.training_layout
    text = tokenizer.decode(layout.ids[layout.kinds == 0])
    assert text.count(GEMMA_TURNS.begin) == 2 and "user\n<Img>" in text and "model\n<Img>" in text
    assert text.rstrip().endswith(GEMMA_TURNS.end)
    assert (layout.kinds == LQ).sum() == (layout.kinds == HQ).sum() == tiny_gemma.num_visual_tokens
    prompt = tokenizer.decode(tiny_gemma.prompt_layout.ids[tiny_gemma.prompt_layout.kinds == 0])
    assert prompt.endswith("<start_of_turn>model\n")


def test_embeddings_are_read_as_gemma_scales_them(tiny_gemma):
    """Gemma multiplies looked-up rows by sqrt(hidden) inside its embedding module: what the adapters are
    initialised to match (`seen_embeddings`) is that output, not the weight."""
    embedding = tiny_gemma.llm.get_input_embeddings()
    seen = seen_embeddings(tiny_gemma.llm)
    torch.testing.assert_close(seen, embedding.weight.float() * 32**0.5, rtol=1e-5, atol=1e-5)


def test_trains_generates_and_explains(tiny_gemma, photo):
    """A few optimiser steps lower the loss; generation yields a complete image; the copy view reads Gemma's
    attention (one weight row per output token, over the LQ tokens)."""
    from lm4lv_core.restore import prepare_inputs

    inputs, _ = prepare_inputs(tiny_gemma, [photo, photo], ["denoise", "flip"])
    lq = tiny_gemma.vision.encode(tiny_gemma.vision.preprocess(inputs))
    params = [p for p in tiny_gemma.trainable.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=1e-2)
    losses = []
    with torch.enable_grad():
        for _ in range(4):
            loss = tiny_gemma.forward_loss(lq, lq, ["denoise", "flip"])["loss"]
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert all(not p.requires_grad for p in tiny_gemma.llm.parameters())  # frozen
    result = list(tiny_gemma.follow(photo, "denoise", mode="resize", explain=True, force_image_after=0))[-1]
    count = tiny_gemma.num_visual_tokens
    assert result.tokens.shape[0] == count and result.copy.weights.shape == (count, count)
    assert result.copy.layer in (0, 1) and float(result.copy.weights.sum(-1).max()) <= 1 + 1e-5
