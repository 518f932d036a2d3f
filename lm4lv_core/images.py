"""Reading user images safely: one clear error per bad input, and a note for every conversion made."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
MAX_PIXELS = 40_000_000  # refuse larger images (decompression bombs); a 12-megapixel photo is fine
MIN_SIDE = 8


@dataclass
class LoadedImage:
    image: Image.Image  # RGB
    notes: list[str] = field(default_factory=list)
    name: str = "image"


def load_image(source, name: str | None = None) -> LoadedImage:
    """A path, bytes, file object, PIL image or uint8/uint16 array -> RGB image + notes. Raises InputError."""
    label = name or (os.path.basename(str(source)) if isinstance(source, (str, os.PathLike)) else "image")
    if isinstance(source, np.ndarray):
        return _convert(_from_array(source), label)
    if isinstance(source, Image.Image):
        return _convert(source, label)
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise InputError(f"{label}: no such file.")
        if os.path.getsize(source) == 0:
            raise InputError(f"{label}: the file is empty.")
        with open(source, "rb") as f:
            data = f.read()
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read()
    else:
        raise InputError(f"{label}: expected an image file, PIL image or array, got {type(source).__name__}.")
    if not data:
        raise InputError(f"{label}: the file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(image.size, label)
            image.load()
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{label}: the image has too many pixels (limit {MAX_PIXELS:,}).") from None
    except UnidentifiedImageError:
        raise InputError(f"{label}: this is not an image file PIL can read.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{label}: the image file is truncated or corrupt ({exc}).") from None
    return _convert(image, label)


def _check_size(size: tuple[int, int], label: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{label}: the image has too many pixels ({width}x{height} = {width * height:,}; "
            f"the limit is {MAX_PIXELS:,})."
        )
    if min(width, height) < MIN_SIDE:
        raise InputError(f"{label}: {width}x{height} is too small; both sides must be at least {MIN_SIDE} pixels.")


def _from_array(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise InputError(f"An image array must be HxW, HxWx3 or HxWx4, not {array.shape}.")
    if array.dtype == np.uint16:
        array = (array.astype(np.float32) / 257.0).round().astype(np.uint8)
    elif array.dtype != np.uint8:
        raise InputError(f"An image array must be uint8 or uint16, not {array.dtype}.")
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _convert(image: Image.Image, label: str) -> LoadedImage:
    _check_size(image.size, label)
    notes: list[str] = []
    if getattr(image, "is_animated", False) and getattr(image, "n_frames", 1) > 1:
        image.seek(0)
        notes.append(f"animated image with {image.n_frames} frames: used the first frame")
        image = image.copy()
    if _orientation(image) not in (None, 1):
        image = ImageOps.exif_transpose(image)
        notes.append("rotated according to its EXIF orientation")
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image).astype(np.float32)
        array = array / 257.0 if array.max() > 255 or mode.startswith("I;16") else array
        image = Image.fromarray(np.clip(array, 0, 255).round().astype(np.uint8)).convert("RGB")
        notes.append("16-bit image converted to 8 bits per channel")
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append("transparency flattened onto white")
    elif mode in ("L", "1"):
        image = image.convert("RGB")
        notes.append("grayscale image converted to RGB")
    elif mode == "CMYK":
        image = image.convert("RGB")
        notes.append("CMYK image converted to RGB")
    elif mode != "RGB":
        image = image.convert("RGB")
        notes.append(f"{mode} image converted to RGB")
    return LoadedImage(image, notes, label)


def _orientation(image: Image.Image):
    try:
        return image.getexif().get(0x0112)
    except Exception:
        return None


def fit_square(image: Image.Image, size: int) -> tuple[Image.Image, list[str]]:
    """Center-crop to a square and resize to size x size (bicubic); notes say what changed."""
    notes = []
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        notes.append(f"center-cropped from {width}x{height} to {side}x{side}")
    if image.size != (size, size):
        notes.append(f"resized from {image.width}x{image.height} to the model's {size}x{size}")
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return image, notes


def cap_size(image: Image.Image, max_side: int) -> tuple[Image.Image, list[str]]:
    """Downscale so that the longest side is at most `max_side` (aspect kept), with a note."""
    if max(image.size) <= max_side:
        return image, []
    scaled = image.copy()
    scaled.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    return scaled, [f"downscaled from {image.width}x{image.height} to {scaled.width}x{scaled.height}"]
