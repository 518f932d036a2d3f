"""What the demo does, without any UI: restore (or degrade then restore) one image, streaming progress updates.

Everything here calls `lm4lv_core`'s public API; the Gradio layer (`app.ui`) only turns updates into components.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from lm4lv_core import TASKS, InputError, LM4LVError
from lm4lv_core.degrade import degrade, strength_from_level, target
from lm4lv_core.explain_images import copy_map_image, error_maps, focus_image, labelled_row, token_psnr
from lm4lv_core.llm import llm_label
from lm4lv_core.metrics import psnr, ssim
from lm4lv_core.restore import Progress
from lm4lv_core.tasks import get_task


@dataclass
class Outcome:
    """The finished restoration of one request."""

    task: str
    degraded: Image.Image
    mae_r: Image.Image
    restored: Image.Image
    reference: Image.Image | None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # {"mae_r": {"psnr":..}, "lm4lv": {...}}
    notes: list[str] = field(default_factory=list)
    text: str = ""
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    explained: Explained | None = None  # the copy view (`explain=True`)


@dataclass
class Explained:
    """What the LLM copied and where the output is wrong (`lm4lv_core.explain`): pictures and their JSON."""

    copy_map: Image.Image | None  # None where the view does not apply (`note` says why)
    error_map: Image.Image | None  # None without a reference
    info: dict  # {"layers", "heads", "agreement", "tokens": [...]} or {"note"}
    token_psnr: dict[str, list[float]] = field(default_factory=dict)  # {"lm4lv": [...], "mae_r": [...]} per patch


@dataclass
class Update:
    """One streamed step: the assistant's message so far, a preview image, the copying heads' focus (with the copy
    view on), and the outcome when done."""

    message: str
    preview: Image.Image | None = None
    outcome: Outcome | None = None
    focus: Image.Image | None = None


def task_from_text(text: str | None, default: str) -> str:
    """A task named in the user's message (exactly one), else the selected task."""
    named = [t for t in TASKS if re.search(rf"\b{t}\b", (text or "").lower())]
    return named[0] if len(named) == 1 else default


def wants_degradation(text: str | None) -> bool:
    return bool(re.search(r"\bdegrade\b", (text or "").lower()))


def upscale(image: Image.Image, size: int = 256) -> Image.Image:
    """Nearest-neighbour enlargement for display (keeps the model's pixels visible)."""
    factor = max(1, size // image.width)
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def side_by_side(images: list[Image.Image], labels: list[str], size: int = 256) -> Image.Image:
    """The images enlarged (`upscale`) side by side, each labelled above."""
    return labelled_row([upscale(im, size) for im in images], labels, below=False)


def score(images: dict[str, Image.Image], reference: Image.Image | None) -> dict[str, dict[str, float]]:
    if reference is None:
        return {}
    ref = np.asarray(reference)
    return {name: {"psnr": psnr(np.asarray(im), ref), "ssim": ssim(np.asarray(im), ref)} for name, im in images.items()}


def metrics_markdown(outcome: Outcome) -> str:
    if not outcome.metrics:
        return (
            "No reference image, so no PSNR/SSIM: the photo you gave is the degraded input. "
            "Tick *Degrade it for me* and give a clean photo to get scores."
        )
    rows = ["| output | PSNR (dB) | SSIM |", "|---|---|---|"]
    for name, label in (("degraded", "degraded input"), ("mae_r", "MAE-r (baseline)"), ("lm4lv", "LM4LV")):
        if name in outcome.metrics:
            m = outcome.metrics[name]
            rows.append(f"| {label} | {m['psnr']:.2f} | {m['ssim']:.4f} |")
    gain = outcome.metrics["lm4lv"]["psnr"] - outcome.metrics["mae_r"]["psnr"]
    rows.append(
        f"| gain of LM4LV over MAE-r | {gain:+.2f} | "
        f"{outcome.metrics['lm4lv']['ssim'] - outcome.metrics['mae_r']['ssim']:+.4f} |"
    )
    return "\n".join(rows)


def progress_message(header: str, progress: Progress) -> str:
    """The chat's text for a step of the restoration."""
    if progress.done == 0:
        return header + "\n\nThe LLM is reading the visual tokens…"
    if progress.unit == "tile":
        return f"{header}\n\ntiles {progress.done} / {progress.total}"
    return f"{header}\n\nLLM: `{progress.text}`\n\nvisual token {progress.done} / {progress.total}"


def model_label(llm_frozen: bool, llm_name: str = "") -> str:
    """How the demo names a model: its LLM (name, size, head width), frozen as in the paper or adapted with LoRA."""
    return f"{llm_label(llm_name)}: " + ("frozen" if llm_frozen else "adapted with LoRA (not frozen)")


class DemoService:
    """Holds the model (loaded once) and runs requests; keeps no per-user state.

    `alternatives`: {label: loader} of other checkpoints a user may select (e.g. the LoRA control), each loaded on
    first use and then kept (`using`)."""

    def __init__(
        self,
        model,
        preview_every: int = 4,
        output_dir: str | None = None,
        max_side: int = 256,
        tile_batch: int = 16,
        alternatives: dict | None = None,
        keep_seconds: float = 3600,
    ):
        self.model = model
        self.keep_seconds = keep_seconds  # result files are served for this long, then deleted
        self.preview_every = preview_every
        self.max_side = max_side  # full-size requests are downscaled to this longest side (the CLI has no cap)
        self.tile_batch = tile_batch
        self.output_dir = output_dir or tempfile.mkdtemp(prefix="lm4lv-demo-")
        self.alternatives = dict(alternatives or {})
        self._loaded: dict[str, DemoService] = {}
        self._loading = threading.Lock()  # a model selected by several users at once is loaded once

    @property
    def label(self) -> str:
        return model_label(self.model.llm_frozen, self.model.llm_name)

    @property
    def labels(self) -> list[str]:
        """This service's model first, then the selectable alternatives."""
        return [self.label] + [name for name in self.alternatives if name != self.label]

    def using(self, label: str | None) -> DemoService:
        """The service of the model named `label` (this one for None or its own label); loads it on first use."""
        if label in (None, self.label):
            return self
        if label not in self.alternatives:
            raise InputError(f"Unknown model {label!r}; choose one of: {', '.join(self.labels)}.")
        with self._loading:
            if label not in self._loaded:
                self._loaded[label] = DemoService(
                    self.alternatives[label](),
                    self.preview_every,
                    self.output_dir,
                    self.max_side,
                    self.tile_batch,
                    keep_seconds=self.keep_seconds,
                )
        return self._loaded[label]

    def prune(self) -> int:
        """Delete result folders older than `keep_seconds` from `output_dir`; returns how many went."""
        import shutil

        cutoff, removed = time.time() - self.keep_seconds, 0
        for entry in os.scandir(self.output_dir):
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        return removed

    @property
    def trained(self) -> bool:
        return self.model.trained

    def prepare(self, source, task: str, synthesize: bool, level: float = 0.5, seed: int = 0, full_size: bool = False):
        """-> (model input, reference or None, notes). `synthesize`: `source` is clean; degrade it here.

        full_size: keep the aspect ratio (longest side capped at `max_side`) for tiled restoration; otherwise
        center-crop and resize to the model's size."""
        self.model.check_task(task)
        image, notes = self.model.fit(source, "tile" if full_size else "resize", self.max_side)
        if full_size and notes and notes[-1].startswith("downscaled"):
            notes[-1] += " for the demo (the command line restores any size)"
        if not synthesize:
            return image, None, notes
        strength = strength_from_level(task, level)
        degraded = degrade(image, task, seed=int(seed), strength=strength)
        described = "" if strength is None else f" (strength {strength:.3g}, seed {int(seed)})"
        notes.append(f"synthesised the {task} degradation{described}")
        return degraded, target(image, task), notes

    def run(
        self,
        source,
        task: str,
        synthesize: bool = False,
        level: float = 0.5,
        seed: int = 0,
        reference=None,
        full_size: bool = False,
        explain: bool = False,
    ):
        """Yield `Update`s while the model generates; the last one carries the `Outcome`. Raises LM4LVError.

        full_size=False: one image at the model's size, streamed visual token by visual token;
        full_size=True: the whole photo in overlapping tiles, streamed tile batch by tile batch.
        explain: the copy view (updates carry the copying heads' focus, the outcome an `Explained`)."""
        began = time.time()
        degraded, ref, notes = self.prepare(source, task, synthesize, level, seed, full_size)
        if reference is not None and ref is None:
            ref = self.given_reference(reference, degraded, task, full_size)
        header = self.header(task, notes)
        yield Update(header + "\n\nEncoding the image…")
        focus = None  # the copying heads' focus at the last preview (the last one shows the last token)
        for event in self.model.follow(
            degraded,
            task,
            mode="tile" if full_size else "resize",
            preview_every=self.preview_every,
            batch_size=self.tile_batch,
            explain=explain and not full_size,
        ):
            if isinstance(event, Progress):
                if event.preview is not None or event.done == 0:
                    focus = focus_image(degraded, event.preview, event.copy) if event.copy is not None else None
                    yield Update(progress_message(header, event), preview=event.preview, focus=focus)
            else:
                restored, mae_r, text, copy = event.image, event.mae_r, event.text, event.copy
        baseline = mae_r
        if get_task(task).mae_r_of_target and ref is not None:  # MAE-r of the rotated/flipped image
            baseline = self.model.reconstruct(ref, "tile" if full_size else "resize")
        outcome = Outcome(task, degraded, baseline, restored, ref, notes=notes, text=text, seconds=time.time() - began)
        scored = {"mae_r": baseline, "lm4lv": restored}
        if not get_task(task).spatial:
            scored = {"degraded": degraded, **scored}
        outcome.metrics = score(scored, ref)
        if explain:
            outcome.explained = self.explained(outcome, copy, full_size)
        outcome.files = self.save(outcome)
        if focus is None and copy is not None:  # no preview showed the last token
            focus = focus_image(degraded, restored, copy)
        yield Update(f"{header}\n\nLLM: `{text}`\n\nDone in {outcome.seconds:.1f} s.", restored, outcome, focus)

    def given_reference(self, reference, degraded: Image.Image, task: str, full_size: bool) -> Image.Image:
        """A user's clean reference as the task's target at the input's size; another shape is an InputError."""
        ref = target(self.model.fit(reference, "tile" if full_size else "resize", self.max_side)[0], task)
        if ref.size != get_task(task).transform(degraded).size:
            raise InputError("The reference image does not have the input image's size and shape.")
        return ref

    def header(self, task: str, notes: list[str]) -> str:
        """The assistant's first lines: the task, what was done to the input, a warning for untrained adapters."""
        header = f"**{task}**: {get_task(task).help}."
        if notes:
            header += "\n\n_" + "; ".join(notes) + "._"
        if not self.model.trained:
            header += "\n\n**Warning: untrained adapters; the output is not a restoration.**"
        return header

    def explained(self, outcome: Outcome, copy, full_size: bool) -> Explained:
        """The copy view of a finished restoration (`copy`: its `CopyMap`, None where the view does not apply)."""
        count, grid = self.model.num_visual_tokens, self.model.vision.grid
        ref = outcome.reference
        errors = error_maps(outcome.restored, outcome.mae_r, ref) if ref is not None and not full_size else None
        per_token = (
            {}
            if errors is None
            else {
                name: token_psnr(image, ref, grid)
                for name, image in (("lm4lv", outcome.restored), ("mae_r", outcome.mae_r))
            }
        )
        if copy is None:
            why = (
                "the copy view reads one image at the model's size, not tiles"
                if full_size
                else "this model writes every token in one pass: there is no token-by-token copy to show"
            )
            return Explained(None, errors, {"note": why}, per_token)
        expected = get_task(outcome.task).token_sources(count)
        info = copy.describe(expected, {f"psnr_{name}": values for name, values in per_token.items()})
        return Explained(copy_map_image(copy, expected), errors, info, per_token)

    def save(self, outcome: Outcome) -> list[str]:
        """The outcome's images as PNGs in a new folder of `output_dir` (folders older than `keep_seconds` go)."""
        self.prune()
        folder = tempfile.mkdtemp(dir=self.output_dir)
        names = {"degraded": outcome.degraded, "mae_r": outcome.mae_r, "lm4lv": outcome.restored}
        if outcome.reference is not None:
            names["reference"] = outcome.reference
        for name in ("copy_map", "error_map"):
            image = getattr(outcome.explained, name, None)
            if image is not None:
                names[name] = image
        paths = []
        for name, image in names.items():
            path = os.path.join(folder, f"{outcome.task}_{name}.png")
            image.save(path)
            paths.append(path)
        return paths

    def restore(
        self,
        image,
        task: str,
        reference=None,
        synthesize: bool = False,
        level: float = 0.5,
        seed: int = 0,
        full_size: bool = False,
        explain: bool = False,
    ) -> Outcome:
        """Run a request to the end (the API endpoints and scripts)."""
        last = None
        for update in self.run(
            image,
            task,
            synthesize=synthesize,
            level=level,
            seed=seed,
            reference=reference,
            full_size=full_size,
            explain=explain,
        ):
            last = update
        return last.outcome

    def restore_many(self, paths: list[str], task: str, full_size: bool = True, progress=None):
        """Restore several files; -> (zip of the PNGs, [(image, caption)], [(name, error)]). Bad files are skipped."""
        import zipfile

        self.prune()
        folder = tempfile.mkdtemp(dir=self.output_dir)
        archive = os.path.join(folder, f"lm4lv_{task}.zip")
        gallery, errors = [], []
        with zipfile.ZipFile(archive, "w") as zf:
            for index, path in enumerate(paths):
                name = os.path.splitext(os.path.basename(path))[0]
                if progress is not None:
                    progress(index, len(paths), name)
                try:
                    outcome = self.restore(path, task, full_size=full_size)
                except LM4LVError as exc:
                    errors.append((os.path.basename(path), str(exc)))
                    continue
                for label, image in (("lm4lv", outcome.restored), ("mae_r", outcome.mae_r)):
                    out = os.path.join(folder, f"{name}_{task}{'' if label == 'lm4lv' else '_mae_r'}.png")
                    image.save(out)
                    zf.write(out, os.path.basename(out))
                gallery.append((outcome.restored, f"{name}: {outcome.seconds:.1f} s"))
        if progress is not None:
            progress(len(paths), len(paths), "done")
        return archive, gallery, errors


def friendly_error(exc: Exception) -> str:
    if isinstance(exc, LM4LVError):
        return f"Sorry, I could not use that: {exc}"
    return f"Sorry, something went wrong on the server ({type(exc).__name__}). Please try another image."


__all__ = [
    "DemoService",
    "Outcome",
    "Explained",
    "Update",
    "InputError",
    "task_from_text",
    "wants_degradation",
    "metrics_markdown",
    "side_by_side",
    "friendly_error",
]
