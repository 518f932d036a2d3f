"""The paper's controls (`--variant`): mechanics on tiny random models."""

import pytest
import torch

from lm4lv_core.errors import CheckpointError, InputError
from lm4lv_core.one_pass import FrozenLLMStack, lm4lv_trainable_count
from lm4lv_core.variants import VARIANTS, build_model, load_model

TASKS = ("denoise", "rotate")


@pytest.fixture(scope="module")
def models(tiny_llm_dir, tiny_vision_dir):
    return {
        v: build_model(
            v, llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=TASKS, layer=1, device="cpu", dtype=torch.float32, seed=1
        )
        for v in VARIANTS
    }  # the tiny LLM itself is seed 0


def _tokens(model, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, model.num_visual_tokens, model.vision.dim, generator=g)


def test_frozen_llm_stack_is_bidirectional_and_position_free(tiny_model):
    stack = FrozenLLMStack(tiny_model.llm, [0, 1])
    x = torch.randn(1, 7, tiny_model.llm.config.hidden_size)
    out = stack(x)
    perm = torch.randperm(7)
    # no rotary embedding and no mask: permuting the inputs permutes the outputs (the LLM itself is causal + RoPE)
    torch.testing.assert_close(stack(x[:, perm]), out[:, perm], atol=1e-5, rtol=1e-4)
    changed = x.clone()
    changed[:, -1] += 1.0
    assert not torch.allclose(stack(changed)[:, 0], out[:, 0])  # the first position sees the last one
    with pytest.raises(InputError, match="out of range"):
        FrozenLLMStack(tiny_model.llm, [5])


def test_every_variant_trains_only_its_own_parameters(models):
    for variant, model in models.items():
        lq, hq = _tokens(model, seed=1), _tokens(model, seed=2)
        terms = model.forward_loss(lq, hq, ["denoise", "rotate"])
        assert terms["pred"].shape == hq.shape and torch.isfinite(terms["loss"]), variant
        terms["loss"].backward()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        frozen_grads = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert trainable and not frozen_grads, variant
        assert sum(p.numel() for p in model.parameters() if p.requires_grad) == model.trainable_parameters(), variant
        model.zero_grad(set_to_none=True)


def test_experts_match_lm4lv_parameter_count_and_start_as_copies(models):
    reference = models["lm4lv"]
    target = lm4lv_trainable_count(reference.vision.dim, reference.llm.config.hidden_size, len(TASKS), 10)
    assert reference.trainable_parameters() == target
    for variant in ("mlp", "transformer"):
        count = models[variant].trainable_parameters()
        assert abs(count - target) / target < 0.1, (variant, count, target)
    for variant in ("linear", "mlp", "transformer"):
        lq = _tokens(models[variant])
        torch.testing.assert_close(models[variant].predict(lq, list(TASKS)), lq)


def test_random_llm_is_random_frozen_and_reproducible(models, tiny_vision_dir, tmp_path):
    real, rand = models["lm4lv"].llm, models["random-llm"].llm
    w_real, w_rand = real.model.layers[0].mlp.up_proj.weight, rand.model.layers[0].mlp.up_proj.weight
    assert not torch.allclose(w_real, w_rand) and not any(p.requires_grad for p in rand.parameters())
    models["random-llm"].save_pretrained(tmp_path / "r", vision_path=tiny_vision_dir)
    loaded = load_model(tmp_path / "r", device="cpu", dtype=torch.float32)
    assert loaded.variant == "random-llm"
    torch.testing.assert_close(loaded.llm.model.layers[0].mlp.up_proj.weight, w_rand)


def test_one_pass_checkpoints_roundtrip_and_restore(models, tiny_vision_dir, tmp_path, photo):
    from lm4lv_core.vision import VisionModule

    other = tmp_path / "other_vision"
    VisionModule.from_config("debug", seed=7).save_pretrained(other)
    lq = _tokens(models["lm4lv"])
    for variant in ("vit-llm", "single-layer", "linear", "mlp", "transformer"):
        model = models[variant]
        with torch.no_grad():  # move away from the copy initialisation so that the round trip is meaningful
            for p in model.trainable.parameters():
                p.add_(0.01 * torch.randn_like(p))
        folder = tmp_path / variant
        model.save_pretrained(folder, vision_path=tiny_vision_dir)
        loaded = load_model(folder, device="cpu", dtype=torch.float32)
        assert loaded.variant == variant and loaded.trained
        torch.testing.assert_close(loaded.predict(lq, ["rotate", "denoise"]), model.predict(lq, ["rotate", "denoise"]))
        result = loaded.restore(photo, "rotate", mode="resize")
        assert result.image.size == (loaded.image_size, loaded.image_size)
        tiled = loaded.restore(photo.resize((40, 24)), "denoise")  # tiles, padding
        assert tiled.image.size == (40, 24)
        with pytest.raises(InputError, match="Unknown task"):
            loaded.restore(photo, "flip", mode="resize")
        with pytest.raises(CheckpointError, match="another vision module"):
            load_model(folder, vision=str(other), device="cpu", dtype=torch.float32)
    (tmp_path / "mlp" / "heads.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(tmp_path / "mlp", device="cpu")


def _random_photos(folder, count=2, shape=(48, 64, 3), seed=0):
    import numpy as np
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_variant_training_and_evaluation_entry_points(tiny_llm_dir, tiny_vision_dir, tmp_path):
    import json

    from train.evaluate import main as evaluate
    from train.train_lm4lv import main as train

    data = _random_photos(tmp_path / "data")
    for variant in ("single-layer", "transformer"):
        run = tmp_path / variant
        train(
            [
                "--variant",
                variant,
                "--vision",
                tiny_vision_dir,
                "--llm",
                tiny_llm_dir,
                "--data",
                str(data),
                "--out",
                str(run),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--probe-every",
                "0",
                "--ridge-init",
                "1",
                "--tasks",
                "denoise,rotate",
                "--layer",
                "0",
            ]
        )
        record = json.loads((run / "lm4lv" / "training.json").read_text())
        assert record["variant"] == variant and record["steps"] == 2 and record["trainable_params"] > 0
        out = tmp_path / f"{variant}.json"
        evaluate(
            [
                "--images",
                str(data),
                "--tasks",
                "denoise,rotate",
                "--json",
                str(out),
                "--checkpoint",
                str(run / "lm4lv"),
                "--llm",
                tiny_llm_dir,
                "--examples",
                str(tmp_path / f"{variant}_ex"),
            ]
        )
        scores = json.loads(out.read_text())
        assert scores["variant"] == variant and scores["training"]["steps"] == 2
        assert set(scores["tasks"]) == {"denoise", "rotate"} and scores["tasks"]["rotate"]["lm4lv"]["psnr"] > 0
        assert (tmp_path / f"{variant}_ex" / "rotate_output.png").is_file()


def test_ablation_runner_and_report(tiny_llm_dir, tiny_vision_dir, tmp_path):
    from train.ablations import main as ablations

    data = _random_photos(tmp_path / "data", shape=(40, 48, 3), seed=1)
    results, report = tmp_path / "results", tmp_path / "docs" / "ABLATIONS.md"
    report.parent.mkdir()
    ablations(
        [
            "--out",
            str(tmp_path / "runs"),
            "--results",
            str(results),
            "--report",
            str(report),
            "--variants",
            "linear,lm4lv",
            "--vision",
            tiny_vision_dir,
            "--llm",
            tiny_llm_dir,
            "--data",
            str(data),
            "--images",
            str(data),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--warmup",
            "1",
            "--jobs",
            "2",
            "--reference",
            str(tmp_path / "none.json"),
        ]
    )
    text = report.read_text()
    assert "| **lm4lv** |" in text and "| linear |" in text and "| MAE-r (baseline) |" in text
    assert "a linear map of the tokens does not explain" in text and "## Adapter analysis" in text
    assert (report.parent / "ablations.png").is_file()
    assert (results / "lm4lv.adapters.json").is_file() and (results / "lm4lv.probe.csv").is_file()


def test_lora_control_starts_as_lm4lv_trains_the_llm_and_roundtrips(models, tiny_llm_dir, tiny_vision_dir, tmp_path):
    plain, lora = models["lm4lv"], models["lm4lv-lora"]
    assert lora.variant == "lm4lv-lora" and not lora.llm_frozen and plain.llm_frozen
    pairs = sum(p.numel() for p in lora.heads.lora.parameters())
    assert lora.trainable_parameters() == plain.trainable_parameters() + pairs and pairs > 0
    lq, hq = _tokens(lora, seed=3), _tokens(lora, seed=4)
    lora.heads.load_state_dict(plain.heads.state_dict(), strict=False)  # same adapters: B = 0 gives the same model
    torch.testing.assert_close(
        lora.forward_loss(lq, hq, ["denoise", "rotate"])["pred"],
        plain.forward_loss(lq, hq, ["denoise", "rotate"])["pred"],
    )
    with torch.no_grad():  # a trained LoRA: the LLM's function changes
        for pair in lora.heads.lora.values():
            pair["B"].weight.add_(0.05 * torch.randn_like(pair["B"].weight))
    changed = lora.forward_loss(lq, hq, ["denoise", "rotate"])["pred"]
    assert not torch.allclose(changed, plain.forward_loss(lq, hq, ["denoise", "rotate"])["pred"])
    lora.save_pretrained(tmp_path / "lora", vision_path=tiny_vision_dir)
    loaded = load_model(tmp_path / "lora", device="cpu", dtype=torch.float32)
    assert loaded.variant == "lm4lv-lora" and not loaded.llm_frozen
    torch.testing.assert_close(loaded.forward_loss(lq, hq, ["denoise", "rotate"])["pred"], changed)
    # the same pairs in PEFT's own format: peft puts them on a fresh copy of the LLM, which then computes what ours does
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    assert PeftConfig.from_pretrained(str(tmp_path / "lora")).r == lora.heads.config.lora_rank
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llm_dir, dtype=torch.float32).eval()
    peft_llm = PeftModel.from_pretrained(fresh, str(tmp_path / "lora")).eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(peft_llm(input_ids=ids).logits, lora.llm(input_ids=ids).logits)
        assert not torch.allclose(peft_llm(input_ids=ids).logits, plain.llm(input_ids=ids).logits)
    with pytest.raises(InputError, match="lm4lv-lora"):
        build_model("lm4lv", lora_rank=4)


def test_variant_interface_refuses_what_does_not_apply(models, tiny_vision_dir, tmp_path):
    from train.train_lm4lv import main as train

    for variant, model in models.items():
        before = model.config.vision if hasattr(model, "config") else model.heads.config.vision
        model.save_pretrained(tmp_path / variant, vision_path="elsewhere")
        after = model.config.vision if hasattr(model, "config") else model.heads.config.vision
        assert after == before, variant  # saving does not change the model's own config
        lq, hq = _tokens(model), _tokens(model, seed=5)
        if model.has_linear_readout:
            [(layer, x, y)] = model.readout(lq, hq, ["denoise", "rotate"])  # one shared readout
            assert x.shape[0] == y.shape[0] == lq.shape[0] * lq.shape[1]
        else:
            with pytest.raises(InputError, match="no linear readout"):
                model.readout(lq, hq, ["denoise", "rotate"])
        compiles = model.compile_llm()  # only the autoregressive variants have an LLM loop to compile
        assert compiles == model.autoregressive, variant
        model.compile_llm(False)
    with pytest.raises(SystemExit, match="--self-condition apply to the autoregressive variants"):
        train(
            ["--variant", "mlp", "--vision", tiny_vision_dir, "--out", str(tmp_path / "run"), "--self-condition", "0.5"]
        )


def test_frozen_constraint_section_pairs_frozen_and_lora_runs(tmp_path):
    import json

    from train.ablation_report import frozen_constraint_lines

    folder = tmp_path / "frozen_constraint"
    folder.mkdir()

    def scores(out):
        return {"denoise": {"lm4lv": {"psnr": out, "ssim": 0.5}, "mae_r": {"psnr": 23.0, "ssim": 0.7}}}

    for kind, out, count in (("frozen", 17.0, 100), ("lora", 18.5, 900)):
        (folder / f"denoise.{kind}.json").write_text(
            json.dumps(
                {"tasks": scores(out), "trainable_params": count, "training": {"steps": 120, "init_from": "ckpt"}}
            )
        )
    (folder / "lonely.lora.json").write_text("{}")  # no frozen partner: left out
    text = "\n".join(frozen_constraint_lines(str(tmp_path)))
    assert "LLM adapted with LoRA: not frozen" in text
    assert "| denoise | 120 steps from `ckpt` | 100 / 900 | 17.00 / 0.500 | 18.50 / 0.500 | +1.50 |" in text
    assert "lonely" not in text and frozen_constraint_lines(str(tmp_path / "none")) == []
