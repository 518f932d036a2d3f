import torch

from lm4lv_core.vision import VisionModule


def test_tokens_keep_cls_and_raster_order():
    vision = VisionModule.from_config("debug", seed=0).eval()
    pixels = torch.randn(2, 3, vision.image_size, vision.image_size)
    emb = vision.mae.vit.embeddings
    seen = {}

    def keep(module, inputs, out):
        seen["tokens"] = out[0]

    handle = emb.register_forward_hook(keep)
    tokens = vision.encode(pixels)
    handle.remove()
    assert tokens.shape == (2, vision.grid**2 + 1, vision.dim) and vision.num_tokens == vision.grid**2 + 1
    # raster order: patch embedding of patch i + position embedding i, with the CLS token first
    patches = emb.patch_embeddings(pixels) + emb.position_embeddings[:, 1:]
    cls = (emb.cls_token + emb.position_embeddings[:, :1]).expand(2, -1, -1)
    torch.testing.assert_close(seen["tokens"], torch.cat([cls, patches], dim=1))
    # HF's default (random noise) would shuffle the patches even at mask ratio 0
    with vision.masking(0.0):
        shuffled = vision.mae.vit.embeddings(pixels)[0]
    assert not torch.allclose(shuffled, seen["tokens"])
    assert vision.config.mask_ratio == 0.75  # restored after the context


def test_decode_roundtrip_shapes_and_save(tmp_path, photo):
    vision = VisionModule.from_config("debug", seed=0)
    image = vision.reconstruct(photo)
    assert image.size == (vision.image_size, vision.image_size) and image.mode == "RGB"
    vision.save_pretrained(tmp_path)
    again = VisionModule.from_pretrained(tmp_path)
    assert again.fingerprint() == vision.fingerprint()
    x = vision.preprocess(photo)
    torch.testing.assert_close(again.decode(again.encode(x)), vision.decode(vision.encode(x)))


def test_fingerprint_same_in_bf16_and_differs_across_weights():
    a = VisionModule.from_config("debug", seed=0)
    b = VisionModule.from_config("debug", seed=1)
    assert a.fingerprint() != b.fingerprint()
    fp = a.fingerprint()
    assert a.to(torch.bfloat16).fingerprint() == fp


def test_loaded_module_is_not_changed_by_rewriting_its_files(tmp_path):
    """safetensors maps files into memory: a checkpoint re-exported (or copied over) while a model built from it is
    serving must not change that model."""
    import shutil

    import torch

    from lm4lv_core.vision import VisionModule

    first, second = VisionModule.from_config("debug", seed=0), VisionModule.from_config("debug", seed=1)
    first.save_pretrained(tmp_path / "a")
    second.save_pretrained(tmp_path / "b")
    loaded = VisionModule.from_pretrained(tmp_path / "a")
    expected = {k: v.clone() for k, v in loaded.state_dict().items()}
    shutil.copyfile(tmp_path / "b" / "model.safetensors", tmp_path / "a" / "model.safetensors")  # in place
    second.save_pretrained(tmp_path / "a")  # and through the library
    for key, value in loaded.state_dict().items():
        torch.testing.assert_close(value, expected[key], msg=key)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["config.json", "model.safetensors"]
    assert VisionModule.from_pretrained(tmp_path / "a").fingerprint() == second.fingerprint()


def test_preprocess_takes_pil_arrays_and_tensors_alike():
    import numpy as np
    from PIL import Image

    vision = VisionModule.from_config("debug", seed=0)
    s = vision.image_size
    batch = np.random.default_rng(0).integers(0, 256, (3, s, s, 3), dtype=np.uint8)
    from_pil = vision.preprocess([Image.fromarray(a) for a in batch])
    assert torch.equal(vision.preprocess(batch), from_pil)  # uint8 (B, H, W, 3), numpy
    assert torch.equal(vision.preprocess(torch.from_numpy(batch)), from_pil)  # uint8 tensor
    floats = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255  # (B, 3, S, S) in [0, 1]
    assert torch.equal(vision.preprocess(floats), from_pil)
    bigger = torch.nn.functional.interpolate(floats, scale_factor=2, mode="nearest")
    assert vision.preprocess(bigger).shape == from_pil.shape  # other sizes are resized


def test_evaluate_mae_token_noise_and_spectrum(tiny_vision_dir, tmp_path):
    """train.evaluate_mae --token-noise: zero noise reproduces MAE-r, heavy noise changes it, the spectrum is a
    descending share of the variance; the JSON holds it all; a malformed list is one sentence."""
    import json

    import numpy as np
    import pytest
    from PIL import Image

    from train.evaluate_mae import main

    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    out = tmp_path / "mae.json"
    main(["--vision", tiny_vision_dir, "--images", str(tmp_path), "--token-noise", "0,3", "--json", str(out)])
    scores = json.loads(out.read_text())[tiny_vision_dir]
    assert scores["token_noise_psnr"]["0.0"] == pytest.approx(scores["psnr"], abs=1e-6)
    assert abs(scores["token_noise_psnr"]["3.0"] - scores["psnr"]) > 1e-3  # the noise reaches the decoder
    counts = scores["directions_for_variance"]
    assert 1 <= counts["0.9"] <= counts["0.99"] <= counts["0.999"]
    assert all(0 <= v <= 1 for v in scores["eigenvalue_ratio"].values())
    with pytest.raises(SystemExit, match="comma-separated numbers"):
        main(["--vision", tiny_vision_dir, "--images", str(tmp_path), "--token-noise", "a,b"])
