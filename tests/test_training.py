"""Training entry points: a run killed and resumed ends exactly where an uninterrupted run ends."""

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        (folder / f"sub{i % 2}").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (80 + 10 * i, 120, 3), dtype=np.uint8)).save(
            folder / f"sub{i % 2}/{i}.png"
        )
    (folder / "notes.txt").write_text("not an image")
    return folder


def _weights(run):
    return load_file(str(run / "state" / "state.safetensors"))


def _random_pair(model):
    """Random (2, N, vision_dim) LQ and HQ tokens for `model`, the same every call."""
    shape = (2, model.num_visual_tokens, model.vision.dim)
    return tuple(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) for seed in (0, 1))


def _assert_merged_predicts_as(merged, sources: dict) -> None:
    """The merged checkpoint predicts, for each task, what its source checkpoint (task -> model) predicts."""
    lq, hq = _random_pair(merged)
    with torch.no_grad():
        for task, source in sources.items():
            want, got = (m.forward_loss(lq, hq, [task, task])["pred"] for m in (source, merged))
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-3)


def _straight_and_resumed(main, common, tmp_path):
    """Run `common` once uninterrupted (tmp_path/straight) and once stopped after its first step and resumed
    (tmp_path/split); returns the two run folders."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(common + ["--out", str(straight)])
    main(common + ["--out", str(split), "--max-minutes", "1e-9"])  # stops (and saves) after step 1
    assert int(open(split / "log.csv").read().count("\n")) == 2  # header + one step
    main(common + ["--out", str(split), "--resume"])
    return straight, split


def test_mae_resume_is_exact_and_refuses_another_total(data_dir, tmp_path):
    from train.pretrain_mae import main

    common = [
        "--preset",
        "debug",
        "--data",
        str(data_dir),
        "--batch-size",
        "4",
        "--steps",
        "6",
        "--mixed-precision",
        "no",
        "--save-every",
        "3",
    ]
    _straight_and_resumed(main, common, tmp_path)
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert (tmp_path / "split" / "vision" / "model.safetensors").is_file()
    stopped = tmp_path / "stopped"
    main(common + ["--out", str(stopped), "--max-minutes", "1e-9"])  # step 1 of 6
    longer = ["12" if arg == "6" else arg for arg in common]
    with pytest.raises(SystemExit, match="holds a run at step 1 of 6, not of --steps 12"):
        main(longer + ["--out", str(stopped), "--resume"])  # would switch schedules part way
    main(longer + ["--out", str(tmp_path / "split"), "--resume"])  # a finished run continues to a longer total
    assert int(open(tmp_path / "split" / "log.csv").read().count("\n")) == 13  # header + 12 steps


def test_lm4lv_training_runs_and_exports(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    from lm4lv_core import LM4LV
    from train.train_lm4lv import main

    main(
        [
            "--vision",
            tiny_vision_dir,
            "--llm",
            tiny_llm_dir,
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "3",
            "--batch-size",
            "2",
            "--probe-every",
            "2",
            "--ridge-init",
            "1",
            "--self-condition",
            "0.5",
            "--tasks",
            "denoise,rotate",
        ]
    )
    log = (tmp_path / "r" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss,ce,l2") and len(log) == 4
    assert (tmp_path / "r" / "probe.csv").read_text().count("\n") == 3  # header + steps 0 and 2
    model = LM4LV.from_pretrained(tmp_path / "r" / "lm4lv", device="cpu")
    assert model.trained and model.tasks == ("denoise", "rotate")


def test_crops_are_deterministic_and_skip_broken_files(data_dir, tmp_path):
    import shutil

    from train.data import RandomCrops

    folder = tmp_path / "data"
    shutil.copytree(data_dir, folder)
    (folder / "broken.png").write_bytes(b"\x89PNG broken")
    a, b = RandomCrops(str(folder), 16, seed=3), RandomCrops(str(folder), 16, seed=3)
    with pytest.warns(UserWarning, match="unreadable training image"):
        batch = a.batch(0, 16)
    assert batch.shape == (16, 3, 16, 16) and 0 <= batch.min() and batch.max() <= 1
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_array_equal(batch.numpy(), b.batch(0, 16).numpy())
        assert not np.array_equal(a.batch(1, 16).numpy(), batch.numpy())


def test_pretrain_architecture_flags_override_the_preset(data_dir, tmp_path):
    import json

    from train.pretrain_mae import main

    main(
        [
            "--preset",
            "debug",
            "--image-size",
            "16",
            "--patch-size",
            "4",
            "--hidden-size",
            "24",
            "--data",
            str(data_dir),
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--mixed-precision",
            "no",
            "--out",
            str(tmp_path),
        ]
    )
    config = json.loads((tmp_path / "vision" / "config.json").read_text())
    assert (config["image_size"], config["patch_size"], config["hidden_size"]) == (16, 4, 24)
    assert config["num_hidden_layers"] == 1  # the rest is the debug preset's


def test_curriculum_init_from_copies_adapters_and_shared_task_tokens(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    import torch

    from lm4lv_core import LM4LV
    from train.train_lm4lv import init_from_checkpoint, main

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "0",
    ]
    main(common + ["--out", str(tmp_path / "first"), "--steps", "2", "--tasks", "repeat"])
    first = LM4LV.from_pretrained(tmp_path / "first" / "lm4lv", device="cpu")
    second = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=["denoise", "repeat"], device="cpu", seed=5)
    untouched = second.heads.task_tokens["denoise"].detach().clone()
    copied = init_from_checkpoint(second, str(tmp_path / "first" / "lm4lv"))
    assert "task_tokens.repeat" in copied and "task_tokens.denoise" not in copied
    for name in ("adapter_in.weight", "adapter_out.bias", "task_tokens.repeat"):
        torch.testing.assert_close(second.heads.state_dict()[name], first.heads.state_dict()[name])
    torch.testing.assert_close(second.heads.task_tokens["denoise"], untouched)
    main(
        common
        + [
            "--out",
            str(tmp_path / "second"),
            "--steps",
            "1",
            "--tasks",
            "denoise,repeat",
            "--init-from",
            str(tmp_path / "first" / "lm4lv"),
        ]
    )
    assert (tmp_path / "second" / "lm4lv" / "heads.safetensors").is_file()


def test_init_task_from_starts_a_new_task_from_a_trained_one(tmp_path, tiny_llm_dir, tiny_vision_dir):
    """--init-task-from: a task the checkpoint lacks starts from a copy of the named task's per-task adapters and
    task tokens; a source task the checkpoint does not have is refused in one sentence."""
    import torch

    from lm4lv_core import LM4LV
    from lm4lv_core.heads import Interface
    from train.train_lm4lv import init_from_checkpoint

    per_task = dict(
        llm=tiny_llm_dir,
        vision=tiny_vision_dir,
        device="cpu",
        interface=Interface(task_readouts=True, task_input_adapters=True),
    )
    first = LM4LV.build(tasks=["denoise", "flip"], seed=1, **per_task)
    first.save_pretrained(tmp_path / "first", vision_path=tiny_vision_dir)
    second = LM4LV.build(tasks=["repeat"], seed=2, **per_task)
    fresh = second.heads.state_dict()["adapter_in.repeat.weight"].clone()
    copied = init_from_checkpoint(second, str(tmp_path / "first"), "denoise")
    assert "task_tokens.repeat" in copied and "adapter_out.repeat.weight" in copied
    theirs, ours = first.heads.state_dict(), second.heads.state_dict()
    for group in ("adapter_in.{}.weight", "adapter_in.{}.bias", "adapter_out.{}.weight", "task_tokens.{}"):
        torch.testing.assert_close(ours[group.format("repeat")], theirs[group.format("denoise")])
    assert not torch.equal(ours["adapter_in.repeat.weight"], fresh)
    with pytest.raises(SystemExit, match="has no such task"):
        init_from_checkpoint(LM4LV.build(tasks=["repeat"], **per_task), str(tmp_path / "first"), "derain")


def test_init_from_refuses_another_vision_module(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    from lm4lv_core import LM4LV
    from lm4lv_core.vision import VisionModule
    from train.train_lm4lv import init_from_checkpoint

    first = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=["repeat"], device="cpu")
    first.save_pretrained(tmp_path / "first", vision_path=tiny_vision_dir)
    other = VisionModule.from_config("debug", seed=99)
    second = LM4LV.build(llm=tiny_llm_dir, vision=other, tasks=["repeat"], device="cpu")
    with pytest.raises(SystemExit, match="another vision module"):
        init_from_checkpoint(second, str(tmp_path / "first"))


def test_position_lr_scale_multiplies_the_step_of_the_position_embeddings(
    data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir
):
    """--position-lr-scale 10: Adam's first step moves each entry by the learning rate, so the zero-initialised
    position embeddings move 10x as far as the zero-initialised adapter_in bias; without the embeddings it is refused."""
    from lm4lv_core import LM4LV
    from train.train_lm4lv import main

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "0",
        "--steps",
        "1",
        "--tasks",
        "denoise",
        "--lr",
        "1e-3",
    ]
    main(common + ["--out", str(tmp_path / "run"), "--position-embeddings", "--position-lr-scale", "10"])
    heads = LM4LV.from_pretrained(tmp_path / "run" / "lm4lv", device="cpu").heads
    ratio = float(heads.visual_positions.abs().max() / heads.adapter_in.bias.abs().max())
    assert ratio == pytest.approx(10, rel=0.01)
    with pytest.raises(SystemExit, match="position-embeddings"):
        main(common + ["--out", str(tmp_path / "refused"), "--position-lr-scale", "10"])


def test_lq_gain_learned_or_annealed_is_saved_and_resumes_exactly(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    """--lq-gain 1 learns the LQ image's gain (it moves); --lq-gain 1 --lq-gain-to 8 --lq-gain-ramp 3 sets it at each
    step (x1, x2.83, x8, then held), keeps it out of the optimiser, ships x8, and a run stopped and resumed ends at the
    same weights; an annealing option without its partner is refused."""
    from lm4lv_core import LM4LV
    from train.train_lm4lv import main

    common = ["--vision", tiny_vision_dir, "--llm", tiny_llm_dir, "--data", str(data_dir), "--batch-size", "2"]
    common += ["--probe-every", "0", "--ridge-init", "0", "--tasks", "denoise", "--lr", "1e-2", "--steps", "4"]
    main(common + ["--out", str(tmp_path / "learned"), "--lq-gain", "1"])
    learned = LM4LV.from_pretrained(tmp_path / "learned" / "lm4lv", device="cpu").heads.lq_log_gain
    assert float(learned.detach()) != 0.0  # moved from log(1)
    annealed = common + ["--lq-gain", "1", "--lq-gain-to", "8", "--lq-gain-ramp", "3"]
    straight, split = _straight_and_resumed(main, annealed, tmp_path)
    heads = LM4LV.from_pretrained(straight / "lm4lv", device="cpu").heads
    assert float(heads.lq_log_gain.detach().exp()) == pytest.approx(8.0)

    def has_gain(run):
        return any(name.endswith("lq_log_gain") for name in _weights(run))

    assert has_gain(tmp_path / "learned") and not has_gain(straight)  # annealed: not in the trained state
    for name, value in _weights(straight).items():
        np.testing.assert_array_equal(value, _weights(split)[name], err_msg=name)
    with pytest.raises(SystemExit, match="--lq-gain START"):
        main(common + ["--out", str(tmp_path / "refused"), "--lq-gain-to", "8"])
    with pytest.raises(SystemExit, match="applies with --lq-gain-to"):
        main(common + ["--out", str(tmp_path / "refused"), "--lq-gain", "1", "--lq-gain-ramp", "3"])


def test_init_from_carries_position_embeddings_or_refuses_to_drop_them(tmp_path, tiny_llm_dir, tiny_vision_dir):
    """A run without position embeddings starts from them unchanged (zero); one with them copies them; a checkpoint
    trained with them is refused by a run without them rather than silently losing them."""
    import torch

    from lm4lv_core import LM4LV
    from lm4lv_core.heads import Interface
    from train.train_lm4lv import init_from_checkpoint

    def build(on):
        return LM4LV.build(
            llm=tiny_llm_dir,
            vision=tiny_vision_dir,
            tasks=["repeat"],
            device="cpu",
            interface=Interface(position_embeddings=on),
        )

    plain = build(False)
    plain.save_pretrained(tmp_path / "plain", vision_path=tiny_vision_dir)
    gaining = build(True)
    assert "visual_positions" not in init_from_checkpoint(gaining, str(tmp_path / "plain"))
    assert not gaining.heads.visual_positions.any()
    with torch.no_grad():
        gaining.heads.visual_positions.fill_(0.5)
    gaining.save_pretrained(tmp_path / "pos", vision_path=tiny_vision_dir)
    again = build(True)
    assert "visual_positions" in init_from_checkpoint(again, str(tmp_path / "pos"))
    torch.testing.assert_close(again.heads.visual_positions, gaining.heads.visual_positions)
    with pytest.raises(SystemExit, match="position-embeddings"):
        init_from_checkpoint(build(False), str(tmp_path / "pos"))


def test_linear_readout_init_starts_the_decoder_at_the_least_squares_readout(data_dir):
    import torch

    from lm4lv_core.vision import VisionModule
    from train.data import RandomCrops
    from train.finetune_mae_decoder import Reconstructor, init_linear_readout

    vision = VisionModule.from_config("debug", seed=0).eval()
    batches = [RandomCrops(str(data_dir), vision.image_size, seed=i).batch(0, 8) for i in range(2)]

    def psnr(v):
        with torch.no_grad():
            mse = torch.stack([((Reconstructor(v)(b).clamp(0, 1) - b) ** 2).mean() for b in batches]).mean()
        return float(-10 * torch.log10(mse))

    before = psnr(vision)
    fit = init_linear_readout(vision, batches)
    assert fit == pytest.approx(psnr(vision), abs=1e-3) and fit > before + 1
    for block in vision.mae.decoder.decoder_layers:  # residual branches start at zero
        with torch.no_grad():
            x = torch.randn(1, 5, vision.config.decoder_hidden_size)
            torch.testing.assert_close(block(x)[0] if isinstance(block(x), tuple) else block(x), x)


def test_decoder_finetune_with_readout_init_runs_and_exports(data_dir, tmp_path, tiny_vision_dir):
    from lm4lv_core.vision import VisionModule
    from train.finetune_mae_decoder import main

    main(
        [
            "--vision",
            tiny_vision_dir,
            "--init-readout",
            "1",
            "--data",
            str(data_dir),
            "--batch-size",
            "4",
            "--steps",
            "2",
            "--mixed-precision",
            "no",
            "--out",
            str(tmp_path),
        ]
    )
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert len(log) == 3 and "psnr" in log[0]
    trained = VisionModule.from_pretrained(tmp_path / "vision")
    assert trained.fingerprint() == VisionModule.from_pretrained(tiny_vision_dir).fingerprint()  # encoder frozen


def test_zero_steps_exports_the_initialisation(data_dir, tmp_path, tiny_vision_dir):
    from train.finetune_mae_decoder import main

    main(
        [
            "--vision",
            tiny_vision_dir,
            "--init-readout",
            "1",
            "--data",
            str(data_dir),
            "--batch-size",
            "4",
            "--steps",
            "0",
            "--mixed-precision",
            "no",
            "--out",
            str(tmp_path),
        ]
    )
    assert (tmp_path / "vision" / "model.safetensors").is_file() and not (tmp_path / "log.csv").exists()


def test_whitened_pixel_loss_run_resumes_exactly_and_refuses_a_raw_curriculum(
    data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir
):
    """--whiten / --pixel-loss: the basis is recomputed identically on --resume and exported with the weights; the
    pixel term is logged; a run without --whiten refuses to start from a whitened checkpoint."""
    import torch
    from safetensors.torch import load_file

    from lm4lv_core import LM4LV
    from train.train_lm4lv import init_from_checkpoint, main

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "1",
        "--whiten",
        "1e-4",
        "--pixel-loss",
        "0.5",
        "--tasks",
        "denoise",
        "--steps",
        "3",
        "--save-every",
        "1",
    ]
    _straight_and_resumed(main, common, tmp_path)
    assert "pixel" in (tmp_path / "straight" / "log.csv").read_text().splitlines()[0].split(",")
    straight = load_file(str(tmp_path / "straight" / "lm4lv" / "heads.safetensors"))
    split = load_file(str(tmp_path / "split" / "lm4lv" / "heads.safetensors"))
    assert {"whiten_mean", "whiten_basis", "whiten_inverse"} <= set(straight)
    eye = torch.eye(straight["whiten_basis"].shape[0])
    torch.testing.assert_close(straight["whiten_basis"] @ straight["whiten_inverse"], eye, atol=1e-3, rtol=0)
    for name, value in straight.items():
        torch.testing.assert_close(split[name], value)
    loaded = LM4LV.from_pretrained(tmp_path / "straight" / "lm4lv", device="cpu")
    torch.testing.assert_close(loaded.heads.whiten_basis, straight["whiten_basis"])
    raw = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=["denoise"], device="cpu")
    with pytest.raises(SystemExit, match="--whiten"):
        init_from_checkpoint(raw, str(tmp_path / "straight" / "lm4lv"))


def test_readout_refit_reaches_the_least_squares_optimum_of_free_running(
    data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir
):
    """train.refit_readout: on the hidden states of free running, the refitted adapter_out errs less than the
    trained one (it is their ridge optimum), and the refitted checkpoint loads with its record."""
    import json

    import torch

    from lm4lv_core import LM4LV
    from train.data import RandomCrops
    from train.objectives import fed_tokens
    from train.refit_readout import FIRST_BATCH, main, refit_readout
    from train.train_lm4lv import main as train
    from train.train_lm4lv import make_pairs

    train(
        [
            "--vision",
            tiny_vision_dir,
            "--llm",
            tiny_llm_dir,
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--probe-every",
            "0",
            "--ridge-init",
            "0",
            "--tasks",
            "denoise",
        ]
    )
    model = LM4LV.from_pretrained(tmp_path / "r" / "lm4lv", device="cpu")
    crops = RandomCrops(str(data_dir), model.image_size, seed=2)
    batches = [make_pairs(crops, model.vision, FIRST_BATCH + i, 4, ["denoise"], 0) for i in range(2)]

    @torch.no_grad()
    def free_error():
        errors = []
        for lq, hq, names in batches:
            [(readout, x, y)] = model.readout(lq, hq, names, fed=fed_tokens(model, lq, hq, names, "free"))
            errors.append(((readout(x) - y) ** 2).mean())
        return float(torch.stack(errors).mean())

    before = free_error()
    fitted = refit_readout(model, batches, "free", ridge=1e-6)
    assert fitted < before
    main(
        [
            "--checkpoint",
            str(tmp_path / "r" / "lm4lv"),
            "--out",
            str(tmp_path / "refit"),
            "--data",
            str(data_dir),
            "--batches",
            "1",
            "--batch-size",
            "2",
        ]
    )
    refitted = LM4LV.from_pretrained(tmp_path / "refit", device="cpu")
    trained = LM4LV.from_pretrained(tmp_path / "r" / "lm4lv", device="cpu")
    assert not torch.equal(refitted.heads.adapter_out.weight, trained.heads.adapter_out.weight)
    torch.testing.assert_close(refitted.heads.adapter_in.weight, trained.heads.adapter_in.weight)
    assert json.loads((tmp_path / "refit" / "refit.json").read_text())["inputs"] == "free"


def test_routing_probe_reads_every_layer_and_the_value_path(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    """train.routing: one writing readout per hidden state (embeddings + each layer), value readouts for the chosen
    layers, and copy / MAE-r figures computed as Table 2 computes them."""
    import json

    import numpy as np

    from lm4lv_core.degrade import degrade
    from lm4lv_core.metrics import psnr
    from train.routing import main
    from train.train_lm4lv import main as train

    train(
        [
            "--vision",
            tiny_vision_dir,
            "--llm",
            tiny_llm_dir,
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "1",
            "--batch-size",
            "2",
            "--probe-every",
            "0",
            "--tasks",
            "denoise",
        ]
    )
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    clean = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    for i, image in enumerate(clean):
        Image.fromarray(image).save(photos / f"{i}.png")
    main(
        [
            "--checkpoint",
            str(tmp_path / "r" / "lm4lv"),
            "--task",
            "denoise",
            "--images",
            str(photos),
            "--data",
            str(data_dir),
            "--fit-images",
            "8",
            "--value-layers",
            "0,last",
            "--json",
            str(tmp_path / "t.json"),
        ]
    )
    table = json.loads((tmp_path / "t.json").read_text())
    assert len(table["writing"]) == 3 and set(table["value"]) == {"0", "1"}  # the tiny LLM has 2 layers
    copy = np.mean([psnr(np.asarray(degrade(c, "denoise", seed=i * 101)), c) for i, c in enumerate(clean)])
    assert abs(table["copy"] - copy) < 1e-6
    assert all(np.isfinite(v) for v in [*table["writing"], *table["value"].values(), table["mae_r"]])
    assert len(table["lq_stream"]) == 3 and all(np.isfinite(table["lq_stream"]))
    assert set(table["loudness"]) == {"lq", "task", "answer", "text"} and min(table["loudness"].values()) > 0
    heads, mixing = table["attention"]["copy_heads"], table["attention"]["lq_mixing"]
    assert len(mixing) == 2 and all(0 <= m <= 1 for m in mixing)
    masses = [h["mass"] for h in heads]
    assert masses == sorted(masses, reverse=True) and all(
        0 <= m <= 1 and h["layer"] in (0, 1) for m, h in zip(masses, heads)
    )
    # --inputs free: the model's own output on free running's hidden states is what Table 2 scores
    from lm4lv_core.variants import load_model
    from train.evaluate import evaluate

    main(
        [
            "--checkpoint",
            str(tmp_path / "r" / "lm4lv"),
            "--task",
            "denoise",
            "--images",
            str(photos),
            "--data",
            str(data_dir),
            "--fit-images",
            "8",
            "--value-layers",
            "0",
            "--inputs",
            "free",
            "--json",
            str(tmp_path / "f.json"),
        ]
    )
    free = json.loads((tmp_path / "f.json").read_text())
    named = [(str(i), Image.fromarray(c)) for i, c in enumerate(clean)]
    scores, _ = evaluate(load_model(str(tmp_path / "r" / "lm4lv")), named, ["denoise"])
    assert free["inputs"] == "free" and abs(free["adapter_out"] - scores["denoise"]["lm4lv"]["psnr"]) < 0.05
    assert free["lq_stream"] == pytest.approx(table["lq_stream"], abs=1e-3)  # the LQ image comes before any fed token


def test_loudness_is_the_mean_embedding_norm_of_each_role():
    from lm4lv_core.sequence import HQ, LQ, TASK, TEXT, Layout
    from train.routing import loudness

    kinds = torch.tensor([TEXT, LQ, LQ, TASK, TEXT, HQ, HQ])
    embeds = torch.zeros(2, 7, 4)
    embeds[:, :, 0] = torch.tensor([1.0, 30.0, 50.0, 2.0, 3.0, 4.0, 6.0])  # norms along one axis
    assert loudness(Layout(torch.zeros(7), kinds, 4), embeds) == {"lq": 40.0, "task": 2.0, "answer": 5.0, "text": 2.0}


def test_make_pairs_torch_path_is_deterministic_and_keeps_the_task_draw(data_dir, tiny_vision_dir):
    """--degradations torch: the same batch for the same step (resume-safe), the same task per sample as numpy."""
    import torch

    from lm4lv_core.tasks import TASKS
    from lm4lv_core.vision import VisionModule
    from train.data import RandomCrops
    from train.train_lm4lv import make_pairs

    vision = VisionModule.from_pretrained(tiny_vision_dir)
    crops = RandomCrops(str(data_dir), vision.image_size, seed=2)
    lq, hq, names = make_pairs(crops, vision, 3, 6, list(TASKS), 0, degradations="torch")
    lq2, hq2, names2 = make_pairs(crops, vision, 3, 6, list(TASKS), 0, degradations="torch")
    _, _, numpy_names = make_pairs(crops, vision, 3, 6, list(TASKS), 0)
    assert names == names2 == numpy_names and torch.equal(lq, lq2) and torch.equal(hq, hq2)
    assert lq.shape == hq.shape == (6, vision.num_tokens, vision.dim)


def test_carry_loss_reads_the_right_stream_resumes_exactly_and_stays_out_of_the_checkpoint(
    data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir
):
    """--carry-loss: the streams it reads are the residuals entering the chosen layers at the LQ positions (the same
    as a plain forward without the cached prefix); several sites average their probes' losses; a run resumes exactly
    with the probes in its state; the exported checkpoint holds only the model."""
    import json

    import torch
    from safetensors.torch import load_file
    from torch.nn import functional as F

    from lm4lv_core import LM4LV
    from lm4lv_core.llm import head_dim
    from lm4lv_core.sequence import LQ
    from train.carry import CarryObjective
    from train.train_lm4lv import main

    model = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=["denoise"], device="cpu", dtype=torch.float32)
    lq, hq = (
        torch.randn(2, model.vision.num_tokens, model.vision.dim),
        torch.randn(2, model.vision.num_tokens, model.vision.dim),
    )
    with torch.no_grad():
        carried, later = model(lq, hq, ["denoise"] * 2, carry_layers=[1, 2])["carry"]  # each (B, N, llm_dim)
        embeds = model.embed_layout(model.training_layout, lq, ["denoise"] * 2, hq)
        plain = model.llm.base_model(inputs_embeds=embeds, output_hidden_states=True).hidden_states
    lq_positions = model.training_layout.positions(LQ)
    torch.testing.assert_close(carried, plain[1][:, lq_positions], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(later, plain[2][:, lq_positions], atol=1e-4, rtol=1e-4)
    objective = CarryObjective(model, layers=[1], weight=1.0)
    (fit,) = objective.initialise([(lq, hq, ["denoise"] * 2)], ridge=1e-6)
    assert fit < float(objective.targets(lq, hq, ["denoise"] * 2).var(0).mean())  # better than each patch's mean
    reference = CarryObjective(model, layers=[1], weight=1.0, target="reference")
    with torch.no_grad():  # the reference's pixels where the task keeps positions, the token's own where it moves them
        mixed = reference.targets(lq, hq, ["denoise", "rotate"])
        torch.testing.assert_close(mixed[0], objective.targets(hq, lq, ["denoise"] * 2)[0])
        torch.testing.assert_close(mixed[1], objective.targets(lq, hq, ["denoise"] * 2)[1])
    with pytest.raises(SystemExit, match="--carry-layer"):
        CarryObjective(model, layers=[2], weight=1.0)
    on_values = CarryObjective(model, layers=[1], weight=1.0, kv_heads=[1])  # reads KV head 1's value vectors
    attention = model.llm.base_model.layers[1].self_attn
    width = head_dim(model.llm.config)
    with torch.no_grad():
        normed = model.llm.base_model.layers[1].input_layernorm(carried[:, 1:])
        expected = attention.v_proj(normed)[..., width : 2 * width]
        torch.testing.assert_close(on_values.features(0, carried), expected)
    assert on_values.probes[0].in_features == width < model.llm.config.hidden_size
    with pytest.raises(SystemExit, match="--carry-kv-head"):
        CarryObjective(model, layers=[1], weight=1.0, kv_heads=[attention.v_proj.out_features // width])
    with pytest.raises(SystemExit, match="one KV head per --carry-layer"):
        CarryObjective(model, layers=[1, 1], weight=1.0, kv_heads=[0])
    two_sites = CarryObjective(model, layers=[1, 1], weight=1.0, kv_heads=[0, None])  # the loss averages the sites
    with torch.no_grad():
        target = two_sites.targets(lq, hq, ["denoise"] * 2)
        expected = (
            sum(F.mse_loss(probe(two_sites.features(i, carried)), target) for i, probe in enumerate(two_sites.probes))
            / 2
        )
        torch.testing.assert_close(two_sites(lq, hq, ["denoise"] * 2)["carry"], expected)
    for flag, value in (("--carry-kv-head", "0"), ("--carry-target", "reference")):
        with pytest.raises(SystemExit, match=f"{flag} applies with --carry-loss"):
            main(
                [
                    "--vision",
                    tiny_vision_dir,
                    "--llm",
                    tiny_llm_dir,
                    "--data",
                    str(data_dir),
                    "--out",
                    str(tmp_path / "refused"),
                    flag,
                    value,
                ]
            )

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "1",
        "--carry-loss",
        "0.5",
        "--carry-layer",
        "1",
        "--tasks",
        "denoise",
        "--steps",
        "3",
        "--save-every",
        "1",
    ]
    _straight_and_resumed(main, common, tmp_path)
    assert "carry" in (tmp_path / "straight" / "log.csv").read_text().splitlines()[0].split(",")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "split")
    assert "model.probes.0.weight" in a and a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    exported = load_file(str(tmp_path / "straight" / "lm4lv" / "heads.safetensors"))
    assert not any("probe" in name for name in exported)
    main(
        common[:-4]
        + [
            "--steps",
            "1",
            "--carry-layer",
            "1,1",
            "--carry-kv-head",
            "1,0",
            "--carry-target",
            "reference",
            "--out",
            str(tmp_path / "values"),
        ]
    )
    recorded = json.loads((tmp_path / "values" / "lm4lv" / "training.json").read_text())
    assert recorded["carry_layer"] == [1, 1] and recorded["carry_kv_head"] == [1, 0]
    assert recorded["carry_target"] == "reference"
    assert recorded["llm_dtype"] in {"fp32", "bf16"}  # what the frozen LLM ran in (the machine's or LM4LV_DTYPE's)


def test_generated_self_conditioning_feeds_the_free_running_tokens(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    """--self-condition-inputs generated: the fed tokens are the model's own free-running generation (fraction 1) or
    the reference (fraction 0); a run with it trains and records the choice."""
    import json

    import torch

    from lm4lv_core import LM4LV
    from train.objectives import fed_options, fed_tokens, generated_mix
    from train.train_lm4lv import main

    model = LM4LV.build(llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=["denoise"], device="cpu", dtype=torch.float32)
    shape = (2, model.vision.num_tokens, model.vision.dim)
    lq, hq, names = torch.randn(shape), torch.randn(shape), ["denoise"] * 2
    free = fed_tokens(model, lq, hq, names, "free")
    assert not torch.allclose(free, hq)
    torch.testing.assert_close(generated_mix(model, lq, hq, names, 1.0), free)
    torch.testing.assert_close(generated_mix(model, lq, hq, names, 0.0), hq)
    torch.testing.assert_close(fed_options(model, lq, hq, names, 1.0, "generated", 0.0)["fed"], free)
    assert set(fed_options(model, lq, hq, names, 0.5, "predicted", 0.0)) == {"feed"}
    assert fed_options(model, lq, hq, names, 0.0, "predicted", 0.0) == {}
    main(
        [
            "--vision",
            tiny_vision_dir,
            "--llm",
            tiny_llm_dir,
            "--data",
            str(data_dir),
            "--out",
            str(tmp_path / "r"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--probe-every",
            "0",
            "--ridge-init",
            "1",
            "--tasks",
            "denoise",
            "--self-condition",
            "0.5",
            "--self-condition-inputs",
            "generated",
        ]
    )
    record = json.loads((tmp_path / "r" / "lm4lv" / "training.json").read_text())
    assert record["self_condition_inputs"] == "generated" and record["steps"] == 2


def test_per_task_readout_refit_and_init_from(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    """refit_readout --task-readouts splits a shared readout and fits each task's on its own task's samples only
    (the same fit as a shared readout refitted on that task alone); training with --task-readouts starts each task
    from a shared checkpoint's readout (--task-input-adapters: its adapter_in); a per-task checkpoint is refused by
    a run with a shared one."""
    import json

    import torch

    from lm4lv_core import LM4LV
    from train.refit_readout import main as refit
    from train.train_lm4lv import init_from_checkpoint
    from train.train_lm4lv import main as train

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "0",
    ]
    train(common + ["--out", str(tmp_path / "r"), "--steps", "2", "--tasks", "denoise,flip"])
    trained = str(tmp_path / "r" / "lm4lv")
    fit = ["--data", str(data_dir), "--batches", "1", "--batch-size", "2", "--inputs", "teacher"]
    refit(["--checkpoint", trained, "--out", str(tmp_path / "split"), "--task-readouts"] + fit)
    refit(["--checkpoint", trained, "--out", str(tmp_path / "denoise"), "--tasks", "denoise"] + fit)
    split = LM4LV.from_pretrained(tmp_path / "split", device="cpu")
    alone = LM4LV.from_pretrained(tmp_path / "denoise", device="cpu")
    assert (
        split.heads.config.task_readouts
        and json.loads((tmp_path / "split" / "refit.json").read_text())["task_readouts"]
    )
    torch.testing.assert_close(split.heads.readout("denoise").weight, alone.heads.adapter_out.weight)
    assert not torch.allclose(split.heads.readout("flip").weight, split.heads.readout("denoise").weight)
    train(
        common
        + [
            "--out",
            str(tmp_path / "t"),
            "--steps",
            "1",
            "--tasks",
            "denoise,flip",
            "--task-readouts",
            "--init-from",
            trained,
            "--lr",
            "1e-9",
        ]
    )
    continued = LM4LV.from_pretrained(tmp_path / "t" / "lm4lv", device="cpu")
    start = LM4LV.from_pretrained(trained, device="cpu")
    for task in ("denoise", "flip"):
        torch.testing.assert_close(
            continued.heads.readout(task).weight, start.heads.adapter_out.weight, atol=1e-6, rtol=1e-4
        )
    with pytest.raises(SystemExit, match="--task-readouts"):
        init_from_checkpoint(start, str(tmp_path / "split"))
    train(
        common
        + [
            "--out",
            str(tmp_path / "i"),
            "--steps",
            "1",
            "--tasks",
            "denoise,flip",
            "--task-input-adapters",
            "--init-from",
            trained,
            "--lr",
            "1e-9",
        ]
    )
    per_input = LM4LV.from_pretrained(tmp_path / "i" / "lm4lv", device="cpu")
    for task in ("denoise", "flip"):
        torch.testing.assert_close(
            per_input.heads.input_adapter(task).weight, start.heads.adapter_in.weight, atol=1e-6, rtol=1e-4
        )
    with pytest.raises(SystemExit, match="--task-input-adapters"):
        init_from_checkpoint(start, str(tmp_path / "i" / "lm4lv"))


def test_merge_tasks_assembles_per_task_parts(data_dir, tmp_path, tiny_llm_dir, tiny_vision_dir):
    """merge_tasks: a part trained on one task from the base (its own whitening basis, positions frozen) gives that
    task's function exactly; the base's other tasks are unchanged; a part that moved the shared positions is
    refused."""
    import json

    import torch

    from lm4lv_core import LM4LV
    from train.merge_tasks import main as merge
    from train.train_lm4lv import main as train

    common = [
        "--vision",
        tiny_vision_dir,
        "--llm",
        tiny_llm_dir,
        "--data",
        str(data_dir),
        "--batch-size",
        "2",
        "--probe-every",
        "0",
        "--ridge-init",
        "0",
        "--whiten",
        "1e-4",
        "--position-embeddings",
        "--steps",
        "2",
    ]
    train(common + ["--out", str(tmp_path / "base"), "--tasks", "denoise,flip"])
    base_dir = str(tmp_path / "base" / "lm4lv")
    part_args = ["--tasks", "denoise", "--init-from", base_dir, "--lr", "1e-2", "--seed", "5"]
    train(common + part_args + ["--out", str(tmp_path / "part"), "--position-lr-scale", "0"])
    merge(["--base", base_dir, "--part", str(tmp_path / "part" / "lm4lv"), "--out", str(tmp_path / "merged")])
    base, part, merged = (
        LM4LV.from_pretrained(d, device="cpu", dtype=torch.float32)
        for d in (base_dir, tmp_path / "part" / "lm4lv", tmp_path / "merged")
    )
    assert not torch.allclose(part.heads.whiten_basis, base.heads.whiten_basis)  # the rebase is exercised
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert record["tasks"] == {"denoise": str(tmp_path / "part" / "lm4lv")}
    assert record["training"][str(tmp_path / "part" / "lm4lv")]["tasks"] == ["denoise"]  # the part's own record
    _assert_merged_predicts_as(merged, {"denoise": part, "flip": base})
    lq, hq = _random_pair(base)
    with torch.no_grad():
        assert not torch.allclose(
            base.forward_loss(lq, hq, ["denoise"] * 2)["pred"], merged.forward_loss(lq, hq, ["denoise"] * 2)["pred"]
        )
    train(common + part_args + ["--out", str(tmp_path / "moved")])
    with pytest.raises(SystemExit, match="--position-lr-scale 0"):
        merge(["--base", base_dir, "--part", str(tmp_path / "moved" / "lm4lv"), "--out", str(tmp_path / "no")])
