"""Mechanics on a tiny random LLM + tiny random ViT-MAE."""

import json
import shutil
import warnings

import numpy as np
import pytest
import torch

from lm4lv_core import LM4LV
from lm4lv_core.errors import CheckpointError, InputError
from lm4lv_core.generate import Finished, ImageDone, TextPiece, VisualToken, generate
from lm4lv_core.heads import Interface
from lm4lv_core.sequence import HQ, IMG_BEGIN, IMG_END, LQ, TASK, TEXT
from train.objectives import self_conditioning


def _tokens(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_visual_tokens, model.vision.dim, generator=g) * 0.6


def test_layouts(tiny_model):
    m = tiny_model
    prompt, train = m.prompt_layout, m.training_layout
    n, k = m.num_visual_tokens, m.heads.config.num_task_tokens
    assert (prompt.kinds == LQ).sum() == n and (prompt.kinds == TASK).sum() == k and (prompt.kinds == HQ).sum() == 0
    assert (train.kinds == HQ).sum() == n
    assert torch.equal(train.ids[: len(prompt)], prompt.ids) and torch.equal(train.kinds[: len(prompt)], prompt.kinds)
    assert train.answer_start == len(prompt)
    answer_text = m.tokenizer.decode(train.ids[train.answer_start :][train.kinds[train.answer_start :] == TEXT])
    assert answer_text == f"{IMG_BEGIN}{IMG_END}{m.tokenizer.eos_token}"
    user = m.tokenizer.decode(prompt.ids[prompt.kinds == TEXT])
    assert f"{IMG_BEGIN}{IMG_END}" in user and "assistant" in user


def test_loss_only_on_the_answer(tiny_model):
    layout = tiny_model.training_layout
    positions, targets = layout.ce_targets()
    assert (positions + 1 >= layout.answer_start).all()
    assert (layout.kinds[positions + 1] == TEXT).all() and torch.equal(layout.ids[positions + 1], targets)
    assert torch.equal(layout.regression_sources() + 1, layout.positions(HQ))
    # nothing of the user turn is a target: the loss does not depend on the user turn's labels, only its inputs
    lq, hq = _tokens(tiny_model), _tokens(tiny_model, seed=1)
    out = tiny_model.forward_loss(lq, hq, ["denoise", "rotate"])
    assert set(out) >= {"loss", "ce", "l2"} and out["loss"].requires_grad
    torch.testing.assert_close(out["loss"], out["ce"] + out["l2"])
    out["loss"].backward()
    assert tiny_model.heads.adapter_in.weight.grad is not None
    assert tiny_model.heads.task_tokens["denoise"].grad.abs().sum() > 0
    assert (
        tiny_model.heads.task_tokens["flip"].grad is None or tiny_model.heads.task_tokens["flip"].grad.abs().sum() == 0
    )
    assert not any(p.requires_grad for p in tiny_model.llm.parameters())
    tiny_model.heads.zero_grad(set_to_none=True)


def test_l2_is_next_token_regression(tiny_model):
    """The L2 term equals the MSE between adapter_out(h at position p-1) and HQ token p."""
    m = tiny_model
    lq, hq = _tokens(m), _tokens(m, seed=1)
    with torch.no_grad():
        out = m.forward_loss(lq, hq, ["deblur", "flip"])
        hidden, _ = m.hidden_states(m.embed_layout(m.training_layout, lq, ["deblur", "flip"], hq))
        pos = m.training_layout.positions(HQ)
        expected = ((m.llm_to_visual(hidden[:, pos - 1]) - hq) ** 2).mean()
    torch.testing.assert_close(out["l2"], expected)


def _one_pass_loss(m, lq, hq, tasks, fed):
    """The training loss computed in one pass over the whole sequence (the reference of the segmented one)."""
    layout = m.training_layout
    hidden, _ = m.hidden_states(m.embed_layout(layout, lq, tasks, fed))  # (B, T, llm_dim)
    pred = m.llm_to_visual(hidden[:, layout.regression_sources()])
    positions, targets = layout.ce_targets()
    ce = torch.nn.functional.cross_entropy(m.logits(hidden[:, positions]).flatten(0, 1), targets.repeat(len(tasks)))
    return ce + ((pred - hq) ** 2).mean(), pred


def test_segmented_training_pass_equals_one_pass_with_self_conditioning(tiny_model):
    """The constant prefix (cached once), the user turn (shared with the self-conditioning pass) and the answer
    give the loss, predictions and gradients of one pass over the sequence with the same fed tokens."""
    m, tasks = tiny_model, ["denoise", "flip"]
    lq, hq = _tokens(m), _tokens(m, seed=1)
    assert len(m.constant_prefix()) == 2 and m.prefix_length == int(m.training_layout.positions(LQ)[0]) > 0
    for _ in range(2):  # the second call reuses the cached prefix
        torch.manual_seed(3)
        out = m.forward_loss(lq, hq, tasks, feed=self_conditioning(hq, 0.5))
        out["loss"].backward()
        grads = [p.grad.clone() for p in m.heads.parameters() if p.grad is not None]
        m.heads.zero_grad(set_to_none=True)
    torch.manual_seed(3)
    with torch.no_grad():
        own = _one_pass_loss(m, lq, hq, tasks, hq)[1]
    swap = torch.rand(hq.shape[:2])[..., None] < 0.5
    fed = torch.where(swap, own, hq)
    assert 0 < swap.sum() < swap.numel()
    loss, pred = _one_pass_loss(m, lq, hq, tasks, fed)
    loss.backward()
    expected = [p.grad.clone() for p in m.heads.parameters() if p.grad is not None]
    m.heads.zero_grad(set_to_none=True)
    close = dict(atol=1e-4, rtol=1e-4)  # fp32; the segments sum attention in another order
    torch.testing.assert_close(out["loss"], loss, **close)
    torch.testing.assert_close(out["pred"], pred, **close)
    assert len(grads) == len(expected) >= 3
    for got, want in zip(grads, expected):  # relative to the gradient's norm (some entries are in the hundreds)
        assert (got - want).norm() <= 1e-4 * want.norm()
    with pytest.raises(ValueError, match="not both"):
        m.forward_loss(lq, hq, tasks, fed=hq, feed=self_conditioning(hq, 0.5))


def test_count_check(tiny_model):
    lq = _tokens(tiny_model)[:, :-1]
    with pytest.raises(ValueError, match="count mismatch"):
        tiny_model.embed_layout(tiny_model.prompt_layout, lq, ["denoise", "denoise"])
    with pytest.raises(ValueError):
        tiny_model.embed_layout(tiny_model.prompt_layout, _tokens(tiny_model), ["denoise"])


def _run(model, lq, tasks, **kw):
    events = list(generate(model, lq, tasks, **kw))
    done = {e.row: e for e in events if isinstance(e, Finished)}
    return events, done


def _free_running_is_teacher_forced(m, lq, hq, tasks):
    """Generate the rows (image forced at once) and check that teacher forcing on the generated tokens predicts them
    (free running = teacher forcing on its own tokens); returns them, (B, N, vision_dim)."""
    finished = {e.row: e for e in m.events(lq, tasks, force_image_after=0) if isinstance(e, Finished)}
    generated = torch.stack([finished[i].tokens for i in range(len(tasks))])
    with torch.no_grad():
        teacher_forced = m.forward_loss(lq, hq, tasks, fed=generated)["pred"]
    torch.testing.assert_close(teacher_forced, generated, atol=1e-4, rtol=1e-4)
    return generated


def test_kv_cache_equals_full_reforward(tiny_model):
    lq = _tokens(tiny_model)
    _, cached = _run(tiny_model, lq, ["denoise", "derain"], force_image_after=3, use_cache=True)
    _, full = _run(tiny_model, lq, ["denoise", "derain"], force_image_after=3, use_cache=False)
    for row in (0, 1):
        assert cached[row].text == full[row].text
        torch.testing.assert_close(cached[row].tokens, full[row].tokens, atol=1e-4, rtol=1e-4)


def test_batch_equals_one_by_one(tiny_model):
    lq = _tokens(tiny_model, batch=3, seed=4)
    tasks = ["denoise", "rotate", "demask"]
    _, batch = _run(tiny_model, lq, tasks, force_image_after=2)
    for i in range(3):
        _, single = _run(tiny_model, lq[i : i + 1], tasks[i : i + 1], force_image_after=2)
        assert single[0].text == batch[i].text
        torch.testing.assert_close(single[0].tokens, batch[i].tokens, atol=1e-4, rtol=1e-4)


def test_modality_switch_on_the_marker(tiny_model, monkeypatch):
    """When the LM writes `<Img>` the generator emits N visual tokens, then `</Img>`, then text until end of turn."""
    m = tiny_model
    script = m.tokenizer.encode("Sure." + IMG_BEGIN, add_special_tokens=False)
    after = m.tokenizer.encode(" Done", add_special_tokens=False) + [m.tokenizer.eos_token_id]
    state = {"i": 0, "after": 0}
    real_logits = m.logits

    def scripted(hidden):
        logits = torch.full((hidden.shape[0], len(m.tokenizer)), -1e9)
        if state["i"] < len(script):
            logits[:, script[state["i"]]] = 0
            state["i"] += 1
        else:
            logits[:, after[min(state["after"], len(after) - 1)]] = 0
            state["after"] += 1
        return logits

    monkeypatch.setattr(m, "logits", scripted)
    events, done = _run(m, _tokens(m, batch=1), ["flip"], force_image_after=None)
    monkeypatch.setattr(m, "logits", real_logits)
    kinds = [type(e).__name__ for e in events]
    first_visual = kinds.index("VisualToken")
    text_before = "".join(e.text for e in events[:first_visual] if isinstance(e, TextPiece))
    assert text_before == "Sure." + IMG_BEGIN
    visual = [e for e in events if isinstance(e, VisualToken)]
    assert [v.index for v in visual] == list(range(m.num_visual_tokens))
    assert kinds[first_visual + m.num_visual_tokens] == "ImageDone"
    assert done[0].text == f"Sure.{IMG_BEGIN}{IMG_END} Done"
    assert done[0].tokens.shape == (m.num_visual_tokens, m.vision.dim)


def test_forced_image_start(tiny_model):
    events, done = _run(tiny_model, _tokens(tiny_model, batch=1), ["denoise"], force_image_after=0)
    assert done[0].text.startswith(IMG_BEGIN) and IMG_END in done[0].text
    assert sum(isinstance(e, ImageDone) for e in events) == 1


def test_restore_api(tiny_model, photo):
    result = tiny_model.restore(photo, "denoise", mode="resize", force_image_after=0)
    assert result.image.size == (tiny_model.image_size,) * 2 and result.mae_r.size == result.image.size
    assert result.tokens.shape == (tiny_model.num_visual_tokens, tiny_model.vision.dim)
    assert any("UNTRAINED" in note for note in result.notes)
    with pytest.raises(InputError, match="Unknown task"):
        tiny_model.restore(photo, "sharpen")
    with pytest.raises(InputError, match="Unknown mode"):
        tiny_model.restore(photo, "denoise", mode="stretch")
    events = list(tiny_model.stream(photo, "flip", force_image_after=0))
    assert isinstance(events[-1], type(result)) and any(isinstance(e, VisualToken) for e in events)


def test_follow_streams_both_modes_and_ends_with_the_restore_result(tiny_model, photo):
    """`follow` is `restore` with Progress events: the same Result, previews where asked, in both modes."""
    import numpy as np

    from lm4lv_core.restore import Progress

    small = photo.resize((50, 40))  # 4 tiles of the tiny model's 32 px
    for mode, options in (("resize", {}), ("tile", {"overlap": 8, "batch_size": 2})):
        events = list(tiny_model.follow(small, "rotate", mode=mode, preview_every=3, force_image_after=0, **options))
        progress, result = events[:-1], events[-1]
        expected = tiny_model.restore(small, "rotate", mode=mode, force_image_after=0, **options)
        assert np.array_equal(np.asarray(result.image), np.asarray(expected.image)) and result.notes == expected.notes
        assert progress and all(isinstance(e, Progress) for e in progress)
        assert progress[-1].done == progress[-1].total and all(e.preview is not None for e in progress[-1:])
        unit = "visual token" if mode == "resize" else "tile"
        assert {e.unit for e in progress} == {unit}
        quiet = list(tiny_model.follow(small, "rotate", mode=mode, preview_every=0, force_image_after=0, **options))
        assert all(e.preview is None for e in quiet[:-1])
    wide = photo.resize((70, 45))
    assert tiny_model.reconstruct(wide, "tile", overlap=8).size == (70, 45)
    assert tiny_model.reconstruct(wide).size == (tiny_model.image_size,) * 2
    image, notes = tiny_model.fit(wide, "tile", max_side=35)
    assert max(image.size) == 35 and notes and notes[-1].startswith("downscaled")


def test_checkpoint_roundtrip_and_refusals(tiny_model, tiny_llm_dir, tiny_vision_dir, tmp_path):
    from lm4lv_core.vision import VisionModule

    ckpt = tmp_path / "ckpt"
    tiny_model.save_pretrained(ckpt, vision_path=tiny_vision_dir)
    loaded = LM4LV.from_pretrained(ckpt, dtype=torch.float32, device="cpu")
    assert loaded.trained
    for name, value in tiny_model.heads.state_dict().items():
        torch.testing.assert_close(loaded.heads.state_dict()[name], value)
    # another vision module (other weights) is refused
    other = tmp_path / "other_vision"
    VisionModule.from_config("debug", seed=7).save_pretrained(other)
    with pytest.raises(CheckpointError, match="another vision module"):
        LM4LV.from_pretrained(ckpt, vision=str(other), dtype=torch.float32)
    # another LLM is refused
    with pytest.raises(CheckpointError, match="another LLM"):
        LM4LV.from_pretrained(ckpt, llm="smollm2", dtype=torch.float32)
    # a corrupt weights file is refused with a clear message
    (ckpt / "heads.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="corrupt"):
        LM4LV.from_pretrained(ckpt, dtype=torch.float32)
    with pytest.raises(CheckpointError, match="does not exist"):
        LM4LV.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not an LM4LV checkpoint"):
        LM4LV.from_pretrained(tmp_path)


def test_tile_grid_and_window():
    from lm4lv_core.tiling import blend_window, tile_starts

    assert tile_starts(32, 32, 8) == [0]
    starts = tile_starts(100, 32, 8)
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert all(b - a <= 32 - 8 for a, b in zip(starts, starts[1:]))
    w = blend_window(32, 8)
    assert w.shape == (32, 32) and w.min() > 0 and w[16, 16] == 1


def test_tile_batch_follows_the_kv_cache_size(tiny_model):
    """The default tile batch is what the memory cap holds of each row's preallocated KV cache, within [1, 64]."""
    from lm4lv_core.generate import GENERATION_SLACK
    from lm4lv_core.tiling import MAX_TILE_BATCH, tile_batch_size

    config = tiny_model.llm.config
    positions = len(tiny_model.prompt_layout) + tiny_model.num_visual_tokens + GENERATION_SLACK
    head_dim = config.hidden_size // config.num_attention_heads
    per_row = config.num_hidden_layers * 2 * config.num_key_value_heads * head_dim * positions * 4  # fp32
    assert tiny_model.generation_bytes_per_row == per_row
    assert tile_batch_size(tiny_model) == MAX_TILE_BATCH
    assert tile_batch_size(tiny_model, memory_mb=1) == 2**20 // per_row
    assert tile_batch_size(tiny_model, memory_mb=0) == 1


def test_tile_batches_are_balanced():
    """Tiles split into as few batches as the cap allows, sizes within one of each other, in order, none lost."""
    from lm4lv_core.tiling import balanced_chunks

    for count, cap in [(336, 64), (10, 4), (3, 64), (64, 64), (65, 64), (1, 1), (7, 1)]:
        chunks = balanced_chunks(list(range(count)), cap)
        sizes = [len(c) for c in chunks]
        assert sum(chunks, []) == list(range(count)) and len(chunks) == -(-count // cap)
        assert max(sizes) <= cap and max(sizes) - min(sizes) <= 1
    assert balanced_chunks([], 8) == []


def test_compiled_llm_falls_back_to_eager_with_one_warning(tiny_model, monkeypatch):
    """compile_llm: generation goes through the compiled forward; if compiling fails, one warning and the same
    outputs as eager execution; with gradients the eager forward is used; compile_llm(False) turns it off."""
    import lm4lv_core.compiled as compiled

    monkeypatch.setattr(tiny_model, "_compiled", None)  # the fixture is shared: leave it as found
    monkeypatch.setattr(tiny_model, "_compiled_forward", None)
    calls = []

    def broken(forward):
        def run(*args, **kwargs):
            calls.append(1)
            raise RuntimeError("no C++ compiler\nmore detail")

        return run

    monkeypatch.setattr(compiled.torch, "compile", broken)
    lq = _tokens(tiny_model)[:1]
    eager = tiny_model.restore_batch(
        [tiny_model.vision.postprocess(tiny_model.vision.decode(lq))[0]], "denoise", mode="resize", force_image_after=0
    )[0]
    tiny_model.compile_llm()
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler"):
        fallback = tiny_model.restore_batch(
            [tiny_model.vision.postprocess(tiny_model.vision.decode(lq))[0]],
            "denoise",
            mode="resize",
            force_image_after=0,
        )[0]
    assert len(calls) == 1 and np.array_equal(np.asarray(eager.image), np.asarray(fallback.image))
    tiny_model.compile_llm(False)
    assert tiny_model._compiled is None


def test_compiled_generation_matches_eager(tiny_llm_dir, tiny_vision_dir, tmp_path, monkeypatch):
    """A real torch.compile of the (tiny, fp32) LLM: the generated tokens match eager generation to 1e-4, through the
    prompt's graph and the decoding step's (or, where this machine cannot compile, the eager fallback)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    model = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, device="cpu", dtype=torch.float32, seed=0)
    lq = _tokens(model)
    eager = [e.tokens for e in model.events(lq, ["denoise", "flip"], force_image_after=0) if isinstance(e, Finished)]
    model.compile_llm()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiled = [
            e.tokens for e in model.events(lq, ["denoise", "flip"], force_image_after=0) if isinstance(e, Finished)
        ]
    assert len(eager) == len(compiled) == 2
    if shutil.which("g++") or shutil.which("c++"):  # inductor's CPU backend builds C++: it must have compiled
        assert model._compiled_forward.failure is None, model._compiled_forward.failure
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_compiled_forward_is_used_without_gradients_only(tiny_model, monkeypatch):
    import lm4lv_core.compiled as compiled

    monkeypatch.setattr(tiny_model, "_compiled", None)
    monkeypatch.setattr(tiny_model, "_compiled_forward", None)
    seen = []
    monkeypatch.setattr(compiled.torch, "compile", lambda forward: lambda *a, **k: seen.append(1) or forward(*a, **k))
    tiny_model.compile_llm()
    embeds = torch.randn(1, 3, tiny_model.llm.config.hidden_size)
    with torch.no_grad():
        tiny_model.hidden_states(embeds)
    assert seen == [1]
    tiny_model.hidden_states(embeds)  # gradients enabled: eager
    assert seen == [1]


@pytest.mark.parametrize("task", ["denoise", "rotate", "flip"])
def test_tiled_restore_keeps_size_and_geometry(tiny_model, task, monkeypatch):
    """Tiled outputs keep the input's size (transposed for rotate), also for images smaller than one tile."""
    from PIL import Image

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (45, 70, 3), dtype=np.uint8))
    result = tiny_model.restore(image, task, overlap=8, batch_size=4, force_image_after=0)
    expected = (45, 70) if task == "rotate" else (70, 45)
    assert result.image.size == expected and result.mae_r.size == expected
    assert result.tokens.shape[0] > 1 and any("tiles" in n for n in result.notes)
    tiny = Image.fromarray(rng.integers(0, 256, (12, 20, 3), dtype=np.uint8))  # smaller than one tile
    small = tiny_model.restore(tiny, task, force_image_after=0)
    assert small.image.size == ((12, 20) if task == "rotate" else (20, 12))


def test_position_embeddings(tiny_llm_dir, tiny_vision_dir, tmp_path):
    """--position-embeddings: zero at the start (the same model), then each visual token gets its own index's vector,
    in teacher forcing and in generation alike (free running = teacher forcing on the generated tokens), saved and
    loaded with the weights; a model without them saves none."""

    def build(on):
        return LM4LV.build(
            llm=tiny_llm_dir,
            vision=tiny_vision_dir,
            device="cpu",
            dtype=torch.float32,
            seed=0,
            interface=Interface(position_embeddings=on),
        )

    m, plain = build(True), build(False)
    assert m.position_embeddings and not plain.position_embeddings  # what the demo tells its users
    lq, hq, tasks = _tokens(m), _tokens(m, seed=1), ["denoise", "flip"]
    torch.testing.assert_close(m.visual_to_llm(hq), plain.visual_to_llm(hq))
    with torch.no_grad():
        m.heads.visual_positions.normal_(0, 1.0, generator=torch.Generator().manual_seed(3))
    assert not torch.allclose(m.visual_to_llm(hq), plain.visual_to_llm(hq))
    _free_running_is_teacher_forced(m, lq, hq, tasks)
    with pytest.raises(ValueError, match="index"):
        m.visual_to_llm(hq[:, 0])
    m.save_pretrained(tmp_path / "pos", vision_path=tiny_vision_dir)
    loaded = LM4LV.from_pretrained(tmp_path / "pos", dtype=torch.float32, device="cpu")
    torch.testing.assert_close(loaded.heads.visual_positions, m.heads.visual_positions)
    assert "visual_positions" not in plain.heads.state_dict()


def test_task_readouts(tiny_llm_dir, tiny_vision_dir, tmp_path):
    """A readout per task: splitting a shared adapter_out changes nothing; then each row is read by its own task's
    readout in teacher forcing and in generation alike (free running = teacher forcing on the generated tokens, a
    mixed batch = its rows one by one), saved and loaded as such; a shared checkpoint still loads shared."""
    m = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, device="cpu", dtype=torch.float32, seed=0)
    lq, hq, tasks = _tokens(m), _tokens(m, seed=1), ["denoise", "flip"]
    with torch.no_grad():
        shared = m.forward_loss(lq, hq, tasks)["pred"]
        m.heads.split_readout()
        torch.testing.assert_close(m.forward_loss(lq, hq, tasks)["pred"], shared)
        m.heads.readout("denoise").weight.mul_(1.5)
        split = m.forward_loss(lq, hq, tasks)["pred"]
    assert not torch.allclose(split[0], shared[0]) and torch.allclose(split[1], shared[1])
    with pytest.raises(ValueError, match="one task name per row"):
        m.llm_to_visual(torch.zeros(2, m.llm.config.hidden_size))
    generated = _free_running_is_teacher_forced(m, lq, hq, tasks)  # (2, N, vision_dim)
    alone = [e for e in m.events(lq[:1], tasks[:1], force_image_after=0) if isinstance(e, Finished)][0]
    torch.testing.assert_close(alone.tokens, generated[0], atol=1e-4, rtol=1e-4)
    groups = m.readout(lq, hq, tasks)
    assert [layer for layer, _, _ in groups] == [m.heads.readout("denoise"), m.heads.readout("flip")]
    assert all(x.shape[0] == m.num_visual_tokens for _, x, _ in groups)  # each task's own rows
    m.save_pretrained(tmp_path / "split", vision_path=tiny_vision_dir)
    loaded = LM4LV.from_pretrained(tmp_path / "split", dtype=torch.float32, device="cpu")
    assert loaded.heads.config.task_readouts
    torch.testing.assert_close(loaded.heads.readout("denoise").weight, m.heads.readout("denoise").weight)
    plain = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, device="cpu", dtype=torch.float32, seed=0)
    plain.save_pretrained(tmp_path / "shared", vision_path=tiny_vision_dir)
    config = json.loads((tmp_path / "shared" / "lm4lv_config.json").read_text())
    del config["task_readouts"]  # as written before per-task readouts existed
    (tmp_path / "shared" / "lm4lv_config.json").write_text(json.dumps(config))
    older = LM4LV.from_pretrained(tmp_path / "shared", dtype=torch.float32, device="cpu")
    assert not older.heads.config.task_readouts and "adapter_out.weight" in older.heads.state_dict()


def test_task_input_adapters(tiny_llm_dir, tiny_vision_dir, tmp_path):
    """An adapter_in per task: splitting a shared one changes nothing; then each row's LQ and fed-back HQ tokens
    enter through its own task's adapter_in, in teacher forcing and generation alike (free running = teacher
    forcing on the generated tokens, a mixed batch = its rows one by one), saved and loaded as such."""
    m = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, device="cpu", dtype=torch.float32, seed=0)
    lq, hq, tasks = _tokens(m), _tokens(m, seed=1), ["denoise", "flip"]
    with torch.no_grad():
        shared = m.forward_loss(lq, hq, tasks)["pred"]
        m.heads.split_input_adapter()
        torch.testing.assert_close(m.forward_loss(lq, hq, tasks)["pred"], shared)
        m.heads.input_adapter("denoise").weight.mul_(1.5)
        split = m.forward_loss(lq, hq, tasks)["pred"]
    assert not torch.allclose(split[0], shared[0]) and torch.allclose(split[1], shared[1])
    with pytest.raises(ValueError, match="one task name per row"):
        m.visual_to_llm(lq)
    generated = _free_running_is_teacher_forced(m, lq, hq, tasks)  # (2, N, vision_dim)
    alone = [e for e in m.events(lq[:1], tasks[:1], force_image_after=0) if isinstance(e, Finished)][0]
    torch.testing.assert_close(alone.tokens, generated[0], atol=1e-4, rtol=1e-4)
    m.save_pretrained(tmp_path / "split", vision_path=tiny_vision_dir)
    loaded = LM4LV.from_pretrained(tmp_path / "split", dtype=torch.float32, device="cpu")
    assert loaded.heads.config.task_input_adapters and not loaded.heads.config.task_readouts
    torch.testing.assert_close(loaded.heads.input_adapter("denoise").weight, m.heads.input_adapter("denoise").weight)


def test_whitening_keeps_every_task_readout(tiny_llm_dir, tiny_vision_dir):
    """set_whitening re-expresses each task's adapter_in and adapter_out in the new basis: the same functions."""
    m = LM4LV.build(
        llm=tiny_llm_dir,
        vision=tiny_vision_dir,
        device="cpu",
        dtype=torch.float32,
        seed=0,
        interface=Interface(whitening=1e-4, task_readouts=True, task_input_adapters=True),
    )
    with torch.no_grad():
        m.heads.readout("flip").weight.mul_(-0.5)
        m.heads.input_adapter("flip").weight.mul_(2.0)
    hidden = torch.randn(2, 5, m.llm.config.hidden_size, generator=torch.Generator().manual_seed(2))
    tokens, tasks = _tokens(m, seed=3), ["denoise", "flip"]
    before = m.llm_to_visual(hidden, tasks), m.visual_to_llm(tokens, tasks=tasks)
    m.heads.set_whitening(_tokens(m, batch=8, seed=4))
    assert not torch.allclose(m.heads.whiten_basis, torch.eye(m.vision.dim))
    after = m.llm_to_visual(hidden, tasks), m.visual_to_llm(tokens, tasks=tasks)
    for got, want in zip(after, before):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-3)


def test_config_with_a_removed_option_is_refused(tiny_model, tiny_vision_dir, tmp_path):
    """Options no recipe uses left the library (`checkpoint.REMOVED_OPTIONS`): a config recording them off loads, one
    trained with them is refused in one sentence."""
    folder = tmp_path / "old"
    tiny_model.save_pretrained(folder, vision_path=tiny_vision_dir)
    config = json.loads((folder / "lm4lv_config.json").read_text())
    (folder / "lm4lv_config.json").write_text(json.dumps({**config, "standardize": False, "task_tokens_first": False}))
    LM4LV.from_pretrained(folder, llm=tiny_model.heads.config.llm)
    (folder / "lm4lv_config.json").write_text(json.dumps({**config, "task_answer_positions": True}))
    with pytest.raises(CheckpointError, match="answer position tables per task, which this version"):
        LM4LV.from_pretrained(folder, llm=tiny_model.heads.config.llm)
