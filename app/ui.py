"""The Gradio layout and event wiring. All work is done by `app.service.DemoService`."""

from __future__ import annotations

import hashlib
import os

import gradio as gr

from lm4lv_core import TASKS

from .gpu import gpu
from .service import (
    DemoService,
    friendly_error,
    metrics_markdown,
    side_by_side,
    task_from_text,
    upscale,
    wants_degradation,
)

CACHE_LIFETIME = (3600, 3600)  # Gradio's copies of uploads and results: checked hourly, deleted after an hour
MODEL_QUEUE = "model"  # every event that runs the model shares one queue (its limit: --concurrency)
EXAMPLES_DIR = os.path.join(os.path.dirname(__file__), "examples")
EXAMPLE_PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "motorcycle_left"]

INTRO = """# LM4LV: a frozen LLM restores images
A **frozen** text-only LLM reads an image as visual tokens of a ViT-MAE (through one linear adapter) and writes the
restored image token by token (through another). Only the two adapters{positions} and 10 task tokens per task were
trained.
Drop a photo below. Tick **Degrade it for me** to give a clean photo: the app degrades it, restores it and scores the
result against your photo. The model works at {size}x{size} pixels: larger photos are center-cropped and resized.
"""


def example_rows() -> list[list]:
    """One example per task: [message (photo + "degrade it and TASK"), task, degrade it for me]; only the message
    is shown."""
    rows = []
    for i, task in enumerate(TASKS):
        photo = os.path.join(EXAMPLES_DIR, f"{EXAMPLE_PHOTOS[i % len(EXAMPLE_PHOTOS)]}.png")
        rows.append([{"text": f"degrade it and {task}", "files": [photo]}, task, True])
    return rows


def build_demo(service: DemoService) -> gr.Blocks:
    with gr.Blocks(title="LM4LV demo", delete_cache=CACHE_LIFETIME) as demo:
        positions = ", a position embedding per visual token" if service.model.position_embeddings else ""
        gr.Markdown(INTRO.format(size=service.model.image_size, positions=positions))
        if not service.model.llm_frozen:
            gr.Markdown(
                f"**LLM adapted with LoRA: not frozen.** This checkpoint is the `lm4lv-lora` control "
                f"({service.model.trainable_parameters():,} trained parameters, LoRA on the LLM's attention "
                "included), not the paper's frozen-LLM model."
            )
        if not service.trained:
            gr.Markdown(
                "⚠️ **No trained checkpoint was found: the adapters are untrained and outputs are not restorations.**"
            )
        with gr.Tab("Chat"):
            chat_tab(service)
        with gr.Tab("Batch"):
            batch_tab(service)
        api_endpoint(service)
    return demo


def chat_tab(service: DemoService) -> None:
    """The conversation: one image per message, streamed restoration, the copy view, results panel, examples."""
    with gr.Row():
        with gr.Column(scale=3):
            chat = gr.Chatbot(label="LM4LV", height=520, elem_id="chat")
            box = gr.MultimodalTextbox(
                file_types=["image"],
                file_count="single",
                elem_id="input",
                placeholder="Drop an image; optionally name a task, e.g. 'denoise'",
            )
            stop = gr.Button("Stop", variant="stop", elem_id="stop", size="sm")
        with gr.Column(scale=2):
            settings = settings_panel(service)
            focus = gr.Image(label="Now: where the token being written reads from", elem_id="focus", **RESULT)
    results = results_panel()
    examples = gr.Examples(
        example_rows(),
        inputs=[box, settings["task"], settings["synth"]],
        visible_columns=[0],
        examples_per_page=7,
        label="Examples (click one: it is degraded and restored with the settings above)",
    )
    outputs = [chat, box, focus, *results]

    @gpu
    def respond(message, history, task_name, synthesize, full_size, strength, seed_value, model_name, explained):
        yield from chat_turn(
            service, message, history, task_name, synthesize, full_size, strength, seed_value, model_name, explained
        )

    inputs = [box, chat, *settings.values()]
    turn = box.submit(respond, inputs, outputs, api_visibility="private", concurrency_id=MODEL_QUEUE)
    example_turn = examples.load_input_event.then(
        respond, inputs, outputs, api_visibility="private", concurrency_id=MODEL_QUEUE
    )  # not cached: the loaded model's
    stop.click(None, None, None, cancels=[turn, example_turn])  # the worker is freed at the next streamed update


RESULT = dict(type="pil", format="png", interactive=False)  # lossless: the demo scores PSNR


def settings_panel(service: DemoService) -> dict:
    """The chat's settings, in `chat_turn`'s argument order: task, synth, full, level, seed, model, explain."""
    task = gr.Radio(list(TASKS), value="denoise", label="Task-token set", elem_id="task")
    model = gr.Radio(
        service.labels,
        value=service.label,
        elem_id="model",
        visible=len(service.labels) > 1,
        label="Frozen LLM (another is loaded when first used)",
    )
    synth = gr.Checkbox(value=False, label="Degrade it for me (my photo is clean)", elem_id="synth")
    full = gr.Checkbox(
        value=False,
        elem_id="full",
        label=f"Keep the photo's size (restore in overlapping tiles, up to {service.max_side} px) instead of one "
        f"{service.model.image_size} px image",
    )
    explain = gr.Checkbox(
        value=True, elem_id="explain", label="Show what the LLM copies (its copying heads' attention on your image)"
    )
    level = gr.Slider(0, 1, value=0.5, step=0.05, label="Degradation strength (1 = the paper's maximum)")
    seed = gr.Number(value=0, precision=0, label="Seed")
    return dict(task=task, synth=synth, full=full, level=level, seed=seed, model=model, explain=explain)


def results_panel() -> list:
    """The results components, in `finished_turn`'s order (RESULTS of them)."""
    with gr.Row(elem_id="results"):
        degraded_img = gr.Image(label="degraded input", elem_id="degraded", **RESULT)
        mae_r_img = gr.Image(label="MAE-r (baseline)", elem_id="mae_r", **RESULT)
        restored_img = gr.Image(label="LM4LV", elem_id="lm4lv", **RESULT)
        reference_img = gr.Image(label="clean reference", elem_id="reference", **RESULT)
    with gr.Row():
        slider = gr.ImageSlider(label="before / after (drag)", type="pil", format="png", elem_id="slider")
        with gr.Column():
            metrics = gr.Markdown(elem_id="metrics")
            files = gr.File(label="Download (PNG)", file_count="multiple", elem_id="files")
    with gr.Row(elem_id="explained"):
        copy_img = gr.Image(label="Copy map: where each output patch read from", elem_id="copy_map", **RESULT)
        error_img = gr.Image(label="Error maps (with a clean reference)", elem_id="error_map", **RESULT)
        psnr_plot = gr.LinePlot(
            x="token", y="PSNR (dB)", color="output", label="PSNR per visual token", elem_id="token_psnr"
        )
    return [
        degraded_img,
        mae_r_img,
        restored_img,
        reference_img,
        slider,
        metrics,
        files,
        copy_img,
        error_img,
        psnr_plot,
    ]


RESULTS = 10  # the results components after [chat, box, focus] in the chat's outputs


def chat_turn(
    service: DemoService,
    message,
    history,
    task_name,
    synthesize,
    full_size,
    strength,
    seed_value,
    model_name=None,
    explain=False,
):
    """One chat turn: yields [chat history, input box, focus, results...] as the restoration streams; the results
    are left unchanged (gr.skip) until the outcome is there. Errors become one sentence in the chat."""
    message = message or {}
    history = list(history or [])
    files_in, text = message.get("files") or [], message.get("text") or ""
    chosen = task_from_text(text, task_name)
    synthesize = bool(synthesize) or wants_degradation(text)
    user_content = [{"path": files_in[0]}] if files_in else []
    if text:
        user_content.append(text)
    history.append({"role": "user", "content": user_content or "(empty message)"})
    keep = [gr.skip()] * (RESULTS + 1)
    if not files_in:
        history.append({"role": "assistant", "content": "Please attach an image (drop it on the input box)."})
        yield [history, None, *keep]
        return
    history.append({"role": "assistant", "content": "Working…"})
    yield [history, None, *keep]
    try:
        for update in service.using(model_name).run(
            files_in[0],
            chosen,
            synthesize=synthesize,
            level=strength,
            seed=int(seed_value or 0),
            full_size=bool(full_size),
            explain=bool(explain),
        ):
            content = [update.message]
            if update.preview is not None:
                content.append(gr.Image(value=_display(update.preview), show_label=False, format="png"))
            history[-1] = {"role": "assistant", "content": content}
            if update.outcome is None:
                focus = update.focus if update.focus is not None else gr.skip()
                yield [history, None, focus, *keep[1:]]
                continue
            yield finished_turn(history, update)
    except Exception as exc:  # report in the chat; the server keeps serving
        history[-1] = {"role": "assistant", "content": friendly_error(exc)}
        yield [history, None, *keep]


def finished_turn(history: list, update) -> list:
    """The chat's last message, the focus, and every results component for a finished restoration."""
    o = update.outcome
    images = [o.degraded, o.mae_r, o.restored] + ([o.reference] if o.reference is not None else [])
    labels = ["degraded", "MAE-r", "LM4LV"] + (["clean"] if o.reference is not None else [])
    content = [
        update.message,
        gr.Image(value=side_by_side(images, labels), show_label=False, format="png"),
        metrics_markdown(o),
    ]
    explained = o.explained
    if explained is not None and explained.copy_map is None:
        content.append(f"_Copy view: {explained.info['note']}._")
    history[-1] = {"role": "assistant", "content": content}
    view = (
        [None, None, None]
        if explained is None
        else [explained.copy_map, explained.error_map, psnr_table(explained.token_psnr)]
    )
    return [
        history,
        None,
        update.focus,
        _display(o.degraded),
        _display(o.mae_r),
        _display(o.restored),
        _display(o.reference) if o.reference is not None else None,
        (_display(o.degraded), _display(o.restored)),
        metrics_markdown(o),
        o.files,
        *view,
    ]


def psnr_table(per_token: dict[str, list[float]]):
    """{"lm4lv": [...], "mae_r": [...]} per patch -> the line plot's table (None when empty)."""
    import pandas as pd

    if not per_token:
        return None
    names = {"lm4lv": "LM4LV", "mae_r": "MAE-r"}
    return pd.DataFrame(
        [
            {"token": i + 1, "PSNR (dB)": value, "output": names.get(name, name)}
            for name, values in per_token.items()
            for i, value in enumerate(values)
        ]
    )


def batch_tab(service: DemoService) -> None:
    """Several files at once, downloadable as a zip."""
    gr.Markdown("Restore several images with one task; bad files are skipped and listed. Results come as a zip.")
    with gr.Row():
        with gr.Column():
            uploads = gr.File(file_count="multiple", file_types=["image"], label="Images", elem_id="batch_files")
            task = gr.Radio(list(TASKS), value="denoise", label="Task-token set")
            full = gr.Checkbox(value=True, label=f"Keep each photo's size (tiles, up to {service.max_side} px)")
            run = gr.Button("Restore all", variant="primary")
        with gr.Column():
            archive = gr.File(label="Download all (zip)", elem_id="batch_zip")
            gallery = gr.Gallery(label="Restored", columns=4, format="png", elem_id="batch_gallery")
            report = gr.Markdown()

    @gpu
    def restore_all(files, task_name, full_size, progress=gr.Progress()):  # noqa: B008 (Gradio's convention)
        paths = [_file_path(f) for f in (files or [])]
        if not paths:
            return None, [], "Please add some images first."

        def tell(done, total, name):
            progress((done, total), desc=f"image {done} / {total}: {name}")

        zip_path, images, errors = service.restore_many(paths, task_name, full_size=bool(full_size), progress=tell)
        lines = [f"Restored {len(images)} of {len(paths)} images with **{task_name}**."]
        lines += [f"- skipped {name}: {error}" for name, error in errors]
        return zip_path, images, "\n".join(lines)

    run.click(
        restore_all,
        [uploads, task, full],
        [archive, gallery, report],
        api_visibility="private",
        concurrency_id=MODEL_QUEUE,
    )


def api_endpoint(service: DemoService) -> None:
    """The stable API: gradio_client.Client(url).predict(image, task, reference, full_size, api_name="/restore"), and
    /explain (also the MCP server's tools, with `python app.py --mcp`)."""
    restore, explain = api_functions(service)
    with gr.Row(visible=False):  # the API's components (gradio_client sends files as FileData)
        api_image = gr.File(type="filepath", label="image")  # a File, so that bad files reach our checks
        api_task = gr.Textbox(value="denoise", label="task")
        api_reference = gr.File(type="filepath", label="reference (optional)")
        api_restored = gr.Image(type="filepath", label="LM4LV", format="png")
        api_mae_r = gr.Image(type="filepath", label="MAE-r", format="png")
        api_full = gr.Checkbox(value=False, label="full size (tiles)")
        api_info = gr.JSON(label="info")
        api_copy = gr.Image(type="filepath", label="copy map", format="png")
        api_errors = gr.Image(type="filepath", label="error maps", format="png")
        api_button = gr.Button("restore")
        explain_button = gr.Button("explain")
    api_button.click(
        restore,
        [api_image, api_task, api_reference, api_full],
        [api_restored, api_mae_r, api_info],
        api_name="restore",
        concurrency_id=MODEL_QUEUE,
    )
    explain_button.click(
        explain,
        [api_image, api_task, api_reference],
        [api_copy, api_errors, api_info],
        api_name="explain",
        concurrency_id=MODEL_QUEUE,
    )


def api_functions(service: DemoService):
    """The API's two functions; their docstrings and type hints are what the MCP server's tool schemas say."""

    @gpu
    def restore(image: str, task: str = "denoise", reference: str | None = None, full_size: bool = False):
        """Restore an image with LM4LV: a frozen LLM writes the restored image's visual tokens one by one.

        Args:
            image: the image to restore (a PNG or JPEG file; the degraded photo).
            task: the task-token set: denoise, deblur, derain, depepper, demask, rotate or flip.
            reference: optional clean version of the same photo; when given, PSNR and SSIM are reported.
            full_size: keep the image's size (restored in overlapping tiles) instead of the model's square size.

        Returns:
            The restored image (PNG), the MAE-r baseline (PNG) and a JSON with the task, the LLM's text, notes on
            what was done to the input, the metrics (with a reference), the seconds taken and the input's sha256.
        """
        o = _run(service, image, task, reference, full_size=bool(full_size))
        info = {
            "task": o.task,
            "text": o.text,
            "notes": o.notes,
            "metrics": o.metrics,
            "seconds": round(o.seconds, 3),
            "input_sha256": _sha256(_file_path(image)),
        }
        return o.files[2], o.files[1], info

    @gpu
    def explain(image: str, task: str = "denoise", reference: str | None = None):
        """Restore an image at the model's size and show which input token each output token copied.

        Args:
            image: the image to restore (a PNG or JPEG file).
            task: the task-token set: denoise, deblur, derain, depepper, demask, rotate or flip.
            reference: optional clean version of the same photo, for the error maps and the per-token PSNR.

        Returns:
            The copy map (PNG), the error maps (PNG; None without a reference) and a JSON: "tokens" has one row per
            output visual token (its top "source" LQ token, that "mass", the "expected" source for the task, the
            "layer" and "heads" read, with a reference "psnr_lm4lv" and "psnr_mae_r"); "layers" and "heads" say
            which attention was read, "agreement" the fraction of tokens copied from the expected source.
        """
        o = _run(service, image, task, reference, explain=True)
        named = {os.path.basename(path).rsplit(".", 1)[0].split("_", 1)[1]: path for path in o.files}
        info = {"task": o.task, "seconds": round(o.seconds, 3), **o.explained.info}
        return named.get("copy_map"), named.get("error_map"), info

    return restore, explain


def _run(service: DemoService, image, task: str, reference, **options):
    """service.restore for the API: an unknown task or a bad file becomes a gr.Error of one sentence."""
    if task not in TASKS:
        raise gr.Error(f"Unknown task {task!r}; choose one of: {', '.join(TASKS)}.")
    try:
        return service.restore(_file_path(image), task, reference=_file_path(reference), **options)
    except Exception as exc:
        raise gr.Error(friendly_error(exc)) from None


def _sha256(path: str) -> str:
    """Of the file the server received: lets a client check that a result is its own."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _file_path(value):
    """gradio_client sends files as FileData dicts ({"path": ...}); plain paths pass through."""
    return value.get("path") if isinstance(value, dict) else value


def _display(image):
    return upscale(image) if image is not None else None
