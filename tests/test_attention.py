"""The CPU decoding kernel equals SDPA (grouped-query heads, masks) and hands other cases to it."""

import torch
from torch.nn import functional as F

from lm4lv_core.attention import CPU_DECODE, cpu_decode_attention, generation_attention, training_attention


class _Layer(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def _reference(query, key, value, mask, groups):
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)  # HF's repeat_kv order
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask).transpose(1, 2)


def test_single_query_step_equals_sdpa_with_grouped_heads_and_mask():
    g = torch.Generator().manual_seed(0)
    query, key, value = (
        torch.randn(4, 9, 1, 16, generator=g),
        torch.randn(4, 3, 20, 16, generator=g),
        torch.randn(4, 3, 20, 16, generator=g),
    )
    mask = torch.zeros(4, 1, 1, 20, dtype=torch.bool)
    mask[..., :13] = True  # a preallocated cache filled up to position 12
    out, weights = cpu_decode_attention(_Layer(), query, key, value, mask, scaling=0.25)
    assert out.shape == (4, 1, 9, 16) and weights.shape == (4, 9, 1, 20)
    expected = F.scaled_dot_product_attention(
        query, key.repeat_interleave(3, 1), value.repeat_interleave(3, 1), attn_mask=mask, scale=0.25
    ).transpose(1, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # the weights it returns (what lm4lv_core.explain reads) are the softmax of the masked, scaled scores per head
    scores = (query @ key.repeat_interleave(3, 1).transpose(-1, -2)) * 0.25  # (4, 9, 1, 20)
    reference = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    torch.testing.assert_close(weights, reference, atol=1e-6, rtol=1e-5)
    assert float(weights[..., 13:].abs().max()) == 0.0
    unmasked, _ = cpu_decode_attention(_Layer(), query, key, value, None)
    torch.testing.assert_close(unmasked, _reference(query, key, value, None, 3), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(unmasked, out)  # the mask matters


def test_longer_queries_go_through_sdpa():
    g = torch.Generator().manual_seed(1)
    query, key, value = (
        torch.randn(2, 9, 5, 16, generator=g),
        torch.randn(2, 3, 5, 16, generator=g),
        torch.randn(2, 3, 5, 16, generator=g),
    )
    out, _ = cpu_decode_attention(_Layer(), query, key, value, None)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    torch.testing.assert_close(out, _reference(query, key, value, causal, 3), atol=1e-5, rtol=1e-5)


def test_kernel_choice_per_device():
    assert generation_attention("cpu") == CPU_DECODE and training_attention("cpu") == "eager"
    assert generation_attention("cuda") == training_attention("cuda") == "sdpa"
    assert training_attention("cpu", "sdpa") == "sdpa"
