"""The demo: handler logic, the /restore API through gradio_client, and a real headless browser."""

import json
import os
import shutil
import time

import numpy as np
import pytest
from PIL import Image

from app.service import DemoService, metrics_markdown, model_label, task_from_text, wants_degradation
from lm4lv_core.errors import InputError
from tests.hub_server import free_port

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "app", "examples", "coffee.png")
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "test-artifacts")


@pytest.fixture(scope="module")
def service(tiny_model):
    return DemoService(tiny_model, preview_every=8)


def test_llm_labels_name_size_and_head_width(capsys):
    from lm4lv_core.checkpoint import SHIPPED, checkpoint_folder
    from lm4lv_core.cli import main

    assert model_label(True, "smollm2") == "SmolLM2-135M-Instruct (135M parameters, 64-value heads): frozen"
    assert model_label(True, "gemma3").startswith("Gemma 3 270M (268M parameters, 256-value heads)")
    assert model_label(True, "org/some-llm") == "org/some-llm: frozen"
    assert checkpoint_folder("lm4lv-smollm2") == str(SHIPPED["lm4lv-smollm2"])  # a shipped name is a checkpoint
    assert main(["models"]) == 0
    listed = capsys.readouterr().out
    assert "lm4lv-smollm2          SmolLM2-135M-Instruct (135M parameters, 64-value heads), frozen  [default]" in listed


def test_task_and_mode_from_text():
    assert task_from_text("please DEBLUR this", "denoise") == "deblur"
    assert task_from_text("deblur or derain?", "flip") == "flip"
    assert task_from_text(None, "rotate") == "rotate"
    assert wants_degradation("degrade it for me") and not wants_degradation("restore")


def test_streams_progress_then_outcome(service):
    updates = list(service.run(EXAMPLE, "denoise", synthesize=True, level=0.6, seed=3))
    assert updates[0].outcome is None and updates[0].preview is None  # first update before any model work
    assert any("visual token" in u.message for u in updates[1:-1])
    assert all(u.preview.size == (service.model.image_size,) * 2 for u in updates[1:] if u.preview is not None)
    outcome = updates[-1].outcome
    assert outcome is not None and outcome.reference is not None
    assert set(outcome.metrics) == {"degraded", "mae_r", "lm4lv"}
    assert "gain of LM4LV over MAE-r" in metrics_markdown(outcome)
    assert any("center-cropped" in n for n in outcome.notes) and any("synthesised" in n for n in outcome.notes)
    assert all(os.path.isfile(p) for p in outcome.files) and len(outcome.files) == 4


def test_own_degraded_photo_has_no_scores(service):
    outcome = service.restore(EXAMPLE, "derain")
    assert outcome.metrics == {} and outcome.reference is None
    assert "No reference image" in metrics_markdown(outcome)


def test_same_seed_same_degradation(service):
    a, _, _ = service.prepare(EXAMPLE, "depepper", synthesize=True, level=1.0, seed=5)
    b, _, _ = service.prepare(EXAMPLE, "depepper", synthesize=True, level=1.0, seed=5)
    assert np.array_equal(np.asarray(a), np.asarray(b))


def test_bad_inputs_raise_clear_errors(service, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        service.restore(str(bad), "denoise")
    with pytest.raises(InputError, match="Unknown task"):
        service.restore(EXAMPLE, "sharpen")


@pytest.fixture(scope="module")
def server(service):
    from app.ui import build_demo

    demo = build_demo(service).queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_restore_api_through_gradio_client(server, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    restored, mae_r, info = client.predict(
        handle_file(EXAMPLE), "deblur", handle_file(EXAMPLE), False, api_name="/restore"
    )
    assert Image.open(restored).size == Image.open(mae_r).size
    assert info["task"] == "deblur" and set(info["metrics"]) >= {"mae_r", "lm4lv"}
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bad)), "denoise", None, api_name="/restore")
    with pytest.raises(Exception, match="Unknown task"):
        client.predict(handle_file(EXAMPLE), "sharpen", None, api_name="/restore")
    restored, _, info = client.predict(handle_file(EXAMPLE), "flip", None, api_name="/restore")  # still serving
    assert info["metrics"] == {} and os.path.isfile(restored)


def test_served_config_has_lossless_images_and_one_model_queue(server, service):
    """Every image the demo shows is PNG (Gradio's default is lossy WebP, read from the served /config), and every
    event that runs the model shares one queue (server-side: not in /config), so --concurrency bounds them together."""
    import urllib.request

    from app.ui import MODEL_QUEUE, build_demo

    config = json.load(urllib.request.urlopen(server + "config"))
    images = [c for c in config["components"] if c.get("type") in ("image", "imageslider", "gallery")]
    assert len(images) >= 7
    assert all(c["props"].get("format") == "png" for c in images), [
        (c["type"], c["props"].get("format")) for c in images
    ]
    functions = list(build_demo(service).fns.values())
    queued = {f.name for f in functions if f.concurrency_id == MODEL_QUEUE}
    assert queued == {"respond", "restore_all", "restore", "explain"}, [(f.name, f.concurrency_id) for f in functions]


def test_explain_api_through_gradio_client(server, service):
    """/explain: the copy map, the error maps with a reference (None without), and one JSON row per output token."""
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    copy_png, errors_png, info = client.predict(
        handle_file(EXAMPLE), "rotate", handle_file(EXAMPLE), api_name="/explain"
    )
    count = service.model.num_visual_tokens
    assert Image.open(copy_png).format == "PNG" and Image.open(errors_png).format == "PNG"
    assert info["layers"] == [info["tokens"][0]["layer"]] and info["heads"] == info["tokens"][0]["heads"]
    assert len(info["tokens"]) == count and [row["token"] for row in info["tokens"]] == list(range(count))
    assert all(0 <= row["source"] < count and 0 < row["mass"] <= 1 for row in info["tokens"])
    grid = int(round((count - 1) ** 0.5))  # rotate (90 degrees counter-clockwise): patch 0 comes from (0, grid - 1)
    assert [row["expected"] for row in info["tokens"][:2]] == [0, grid]
    assert info["tokens"][0]["psnr_lm4lv"] is None and isinstance(info["tokens"][1]["psnr_mae_r"], float)
    copy_png, errors_png, info = client.predict(handle_file(EXAMPLE), "denoise", None, api_name="/explain")
    assert errors_png is None and "psnr_lm4lv" not in info["tokens"][1]


def test_mcp_schema_lists_the_restore_tool(service):
    """`python app.py --mcp`: Gradio's MCP server describes /restore with each argument's meaning."""
    import urllib.request

    from app.ui import build_demo

    demo = build_demo(service).queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, mcp_server=True)
    try:
        schema = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/mcp/schema"))
    finally:
        demo.close()
    tools = {tool["name"]: tool for tool in schema}
    restore = next(tool for name, tool in tools.items() if name.endswith("restore"))
    properties = restore["inputSchema"]["properties"]
    assert "task-token set" in properties["task"]["description"], properties
    assert "clean version" in properties["reference"]["description"]
    assert any(name.endswith("explain") for name in tools)


def test_a_model_selected_by_many_at_once_is_loaded_once(tiny_model):
    import threading

    calls = []

    def slow_loader():
        calls.append(1)
        time.sleep(0.3)
        return tiny_model

    service = DemoService(tiny_model, alternatives={"other": slow_loader})
    got = []
    threads = [threading.Thread(target=lambda: got.append(service.using("other"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(g) for g in got}) == 1


def _chromium():
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="Debian chromium is not installed")
def test_browser_end_to_end(default_model):
    """In headless Chromium: click an example, submit, wait for the three images, the table and the copy view; then
    submit again, press Stop while it streams, and check that the next request is served (timings in
    test-artifacts/timing.json, the page in demo.png)."""
    playwright = pytest.importorskip("playwright.sync_api")
    from app.ui import build_demo

    demo = build_demo(DemoService(default_model)).queue(default_concurrency_limit=1)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    os.makedirs(ARTIFACTS, exist_ok=True)
    try:
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=_chromium(),
                args=[
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                ],
            )
            page = browser.new_page(viewport={"width": 1400, "height": 1900})
            page.goto(f"http://127.0.0.1:{port}/", wait_until="networkidle")
            began = time.perf_counter()
            timing = {"first_update_seconds": _submit_example(page)}
            page.locator("#metrics table").wait_for(timeout=180_000)
            timing["result_seconds"] = round(time.perf_counter() - began, 2)
            table = page.locator("#metrics").inner_text()
            assert "MAE-r" in table and "LM4LV" in table and "PSNR" in table
            for elem in ("degraded", "mae_r", "lm4lv", "copy_map", "error_map", "focus"):
                assert page.locator(f"#{elem} img").count() >= 1, elem
            page.screenshot(path=os.path.join(ARTIFACTS, "demo.png"), full_page=True)
            timing.update(_stop_then_next(page))
            with open(os.path.join(ARTIFACTS, "timing.json"), "w") as f:
                json.dump(timing, f)
            browser.close()
    finally:
        demo.close()


def _submit_example(page, timeout_ms: int = 30_000) -> float:
    """Click the first example (which runs it); seconds until the assistant's first streamed message."""
    page.get_by_text("Examples (click one").wait_for(timeout=30_000)
    began = time.perf_counter()
    before = page.locator("#chat").inner_text().count("denoise")
    page.locator("button.gallery-item").first.click()  # the first example: a photo and "degrade it and denoise"
    page.wait_for_function(
        f"document.querySelector('#chat').innerText.split('denoise').length - 1 > {before}", timeout=timeout_ms
    )
    return round(time.perf_counter() - began, 2)


def _stop_then_next(page) -> dict:
    """Submit, press Stop once tokens stream, then submit again: the stopped turn never finishes and the next one
    does (the worker was freed)."""
    _submit_example(page)
    page.wait_for_function("document.querySelector('#chat').innerText.includes('visual token')", timeout=60_000)
    page.locator("#stop").click()
    time.sleep(2)
    stopped = page.locator("#chat").inner_text()
    time.sleep(4)
    assert page.locator("#chat").inner_text() == stopped  # no token streamed after Stop
    next_first_update = _submit_example(page, timeout_ms=120_000)
    page.wait_for_function(
        "document.querySelector('#chat').innerText.split('Done in').length - 1 >= 2", timeout=180_000
    )
    finished = page.locator("#chat").inner_text().count("Done in")
    assert finished == 2, finished  # the first turn and the one after Stop; the stopped one never finished
    return {"next_first_update_seconds_after_stop": next_first_update}


def test_full_size_request_streams_tiles(service):
    updates = list(service.run(EXAMPLE, "rotate", synthesize=True, full_size=True))
    tiles = [u for u in updates if "tiles" in u.message and u.outcome is None]
    assert tiles and tiles[-1].preview is not None
    outcome = updates[-1].outcome
    photo = Image.open(EXAMPLE)
    assert outcome.restored.size == (photo.height, photo.width)  # rotated, full size
    assert outcome.mae_r.size == outcome.reference.size == outcome.restored.size
    assert set(outcome.metrics) == {"mae_r", "lm4lv"}


def test_batch_restore_zip(service, tmp_path):
    import zipfile

    bad = tmp_path / "notes.png"
    bad.write_text("no image here")
    archive, gallery, errors = service.restore_many([EXAMPLE, str(bad)], "denoise", full_size=False)
    assert len(gallery) == 1 and errors[0][0] == "notes.png" and "not an image" in errors[0][1]
    with zipfile.ZipFile(archive) as zf:
        assert sorted(zf.namelist()) == ["coffee_denoise.png", "coffee_denoise_mae_r.png"]


def test_a_second_model_is_selectable_and_loaded_once(tiny_model, tiny_llm_dir, tiny_vision_dir, tmp_path):
    import torch

    from app.main import alternative_loaders
    from app.ui import chat_turn
    from lm4lv_core.variants import build_model

    lora = build_model(
        "lm4lv-lora", llm=tiny_llm_dir, vision=tiny_vision_dir, tasks=("denoise",), device="cpu", dtype=torch.float32
    )
    lora.save_pretrained(tmp_path / "lora", vision_path=tiny_vision_dir)
    loaders = alternative_loaders([str(tmp_path / "lora")], None, tiny_llm_dir)
    lora_label = model_label(False, tiny_llm_dir)
    assert list(loaders) == [lora_label] and lora_label.endswith("adapted with LoRA (not frozen)")
    calls = []
    service = DemoService(
        tiny_model, preview_every=8, alternatives={k: (lambda f=f: calls.append(1) or f()) for k, f in loaders.items()}
    )
    assert service.labels == [model_label(True, tiny_llm_dir), lora_label]
    assert service.label.endswith(": frozen")
    assert service.using(None) is service and service.using(service.label) is service
    other = service.using(lora_label)
    assert other is service.using(lora_label) and len(calls) == 1
    assert not other.model.llm_frozen and other.label == lora_label
    with pytest.raises(InputError, match="Unknown model"):
        service.using("GPT-9")
    message = {"files": [EXAMPLE], "text": "denoise"}
    *_, last = chat_turn(service, message, [], "denoise", False, False, 0.5, 0, lora_label)
    assert "Done in" in str(last[0][-1]["content"][0])
    message = {"files": [EXAMPLE], "text": ""}
    *_, last = chat_turn(service, message, [], "deblur", False, False, 0.5, 0, lora_label)
    assert "Sorry" in str(last[0][-1]["content"])  # the LoRA checkpoint has no deblur tokens: one sentence


def test_old_result_folders_are_deleted(tiny_model, tmp_path):
    """Result files are served for `keep_seconds`, then deleted at the next save (Gradio's own copies: delete_cache)."""
    service = DemoService(tiny_model, output_dir=str(tmp_path), keep_seconds=60)
    old, fresh = tmp_path / "old", tmp_path / "fresh"
    old.mkdir()
    fresh.mkdir()
    (old / "x.png").write_bytes(b"png")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    outcome = service.restore(EXAMPLE, "denoise")
    assert not old.exists() and fresh.exists() and all(os.path.isfile(p) for p in outcome.files)
