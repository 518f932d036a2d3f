"""The copy view: which LQ token each generated token read, recorded during generation (lm4lv_core.explain)."""

import numpy as np
import torch
from PIL import Image

from lm4lv_core.explain import CopyMap, choose_heads, copy_map
from lm4lv_core.explain_images import copy_map_image, error_maps, focus_image, token_psnr
from lm4lv_core.restore import Progress, Result
from lm4lv_core.tasks import get_task


def _synthetic_attention(count=17, layers=4, heads=3, copy_layer=2, copy_head=1, seed=0):
    """(T, layers, heads, N): random diffuse attention, an attention sink (head 0 of every layer on LQ token 0) and
    one head that copies token i at step i."""
    g = torch.Generator().manual_seed(seed)
    attention = torch.rand(count, layers, heads, count, generator=g).softmax(-1) * 0.3
    attention[:, :, 0] = 0.0
    attention[:, :, 0, 0] = 0.95  # a sink: always the same token
    attention[:, copy_layer, copy_head] = torch.eye(count) * 0.9
    return attention


def test_choose_heads_finds_the_copying_head_not_the_sink():
    attention = _synthetic_attention()
    assert choose_heads(attention) == (2, [1])
    copy = copy_map(attention)
    assert torch.equal(copy.sources, torch.arange(17)) and torch.allclose(copy.mass, torch.full((17,), 0.9))
    assert copy.agreement(torch.arange(17)) == 1.0
    flipped = torch.from_numpy(get_task("flip").token_sources(17))
    assert copy.agreement(flipped) < 0.5  # the identity is not the flip


def test_describe_rows():
    copy = CopyMap(layer=3, heads=[0, 2], weights=torch.eye(5) * 0.5)
    info = copy.describe(np.arange(5), {"psnr_lm4lv": [30.0, 31.0, 32.0, 33.0]})
    assert info["layers"] == [3] and info["heads"] == [0, 2] and info["agreement"] == 1.0
    assert info["tokens"][0] == {
        "token": 0,
        "source": 0,
        "mass": 0.5,
        "layer": 3,
        "heads": [0, 2],
        "expected": 0,
        "psnr_lm4lv": None,
    }
    assert info["tokens"][4]["psnr_lm4lv"] == 33.0


def test_follow_records_the_attention_that_wrote_each_token(tiny_model, photo):
    """One weight row per generated token, each a distribution over the LQ tokens at most 1 (the rest of the mass
    is on text, task tokens and the answer), the same image as without the view, and the kernel restored."""
    kernel = tiny_model.llm.config._attn_implementation
    events = list(tiny_model.follow(photo, "denoise", mode="resize", preview_every=4, explain=True))
    result = events[-1]
    count = tiny_model.num_visual_tokens
    assert isinstance(result, Result) and result.copy.weights.shape == (count, count)
    assert float(result.copy.weights.min()) >= 0 and float(result.copy.weights.sum(-1).max()) <= 1 + 1e-5
    layers, heads = len(tiny_model.llm.base_model.layers), tiny_model.llm.config.num_attention_heads
    assert 0 <= result.copy.layer < layers and result.copy.heads and max(result.copy.heads) < heads
    shown = [e for e in events if isinstance(e, Progress) and e.preview is not None and e.done > 0]
    assert shown and all(e.copy is not None and len(e.copy.weights) == e.done for e in shown)
    plain = tiny_model.restore(photo, "denoise", mode="resize")
    assert np.array_equal(np.asarray(plain.image), np.asarray(result.image))
    assert tiny_model.llm.config._attn_implementation == kernel
    assert all(not layer.self_attn._forward_hooks for layer in tiny_model.llm.base_model.layers)
    assert tiny_model.restore(photo, "denoise", mode="resize").copy is None  # only when asked


def test_one_pass_control_has_no_copy_view(tiny_llm_dir, tiny_vision_dir, photo):
    from lm4lv_core.variants import build_model

    control = build_model(
        "vit-llm", llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=("denoise",), device="cpu", dtype=torch.float32
    )
    result = list(control.follow(photo, "denoise", mode="resize", explain=True))[-1]
    assert result.copy is None


def test_pictures():
    size, grid = 32, 4
    rng = np.random.default_rng(0)
    lq = Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    copy = copy_map(_synthetic_attention())
    assert focus_image(lq, lq, copy).size == (2 * 256 + 8, 256 + 22)
    expected = get_task("denoise").token_sources(17)
    assert copy_map_image(copy, expected).size == (2 * 256 + 8, 256 + 22)
    noisy = Image.fromarray(np.clip(np.asarray(lq, dtype=int) + 20, 0, 255).astype(np.uint8))
    errors = np.asarray(error_maps(noisy, lq, lq))
    assert errors[:256, :256].mean() > errors[:256, 264:].mean()  # LM4LV's panel shows the error, MAE-r's is black
    values = token_psnr(noisy, lq, grid)
    assert len(values) == grid * grid and token_psnr(lq, lq, grid) == [99.0] * (grid * grid)
