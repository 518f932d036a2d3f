"""Bad and unusual inputs: one clear error, or a conversion with a note."""

import io

import numpy as np
import pytest
from PIL import Image

from lm4lv_core.errors import InputError
from lm4lv_core.images import MAX_PIXELS, fit_square, load_image


def _png(image: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def rgb():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))


def test_bad_files(tmp_path, rgb):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(_png(rgb, "JPEG")[:300])
    for path, message in [
        (empty, "empty"),
        (text, "not an image"),
        (truncated, "truncated or corrupt"),
        (tmp_path / "missing.png", "no such file"),
    ]:
        with pytest.raises(InputError, match=message):
            load_image(str(path))


def test_sizes():
    with pytest.raises(InputError, match="too small"):
        load_image(_png(Image.new("RGB", (1, 1))))
    with pytest.raises(InputError, match="too many pixels"):
        load_image(_png(Image.new("L", (8000, 6000))))  # 48 MP > limit, refused before decoding
    assert MAX_PIXELS >= 12_000_000
    strip = load_image(_png(Image.new("RGB", (2000, 10))))
    assert strip.image.size == (2000, 10)


@pytest.mark.parametrize(
    "mode,note", [("RGBA", "transparency"), ("L", "grayscale"), ("CMYK", "CMYK"), ("P", "P image")]
)
def test_modes_converted_with_a_note(rgb, mode, note):
    image = rgb.convert(mode)
    loaded = load_image(_png(image, "TIFF" if mode == "CMYK" else "PNG"))
    assert loaded.image.mode == "RGB" and any(note in n for n in loaded.notes)


def test_16_bit():
    array = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    loaded = load_image(_png(Image.fromarray(array)))
    assert loaded.image.mode == "RGB" and any("16-bit" in n for n in loaded.notes)
    assert np.asarray(loaded.image)[-1, -1, 0] == 255 and np.asarray(loaded.image)[0, 0, 0] == 0
    from_array = load_image(np.stack([array] * 3, -1))
    assert from_array.image.mode == "RGB"


def test_animated_gif_first_frame():
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    loaded = load_image(buf.getvalue())
    assert any("first frame" in n for n in loaded.notes)
    assert np.asarray(loaded.image)[0, 0, 0] > 200


def test_exif_orientation(rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    loaded = load_image(_png(rgb, "JPEG", exif=exif))
    assert loaded.image.size == (40, 60) and any("EXIF" in n for n in loaded.notes)


def test_fit_square(rgb):
    image, notes = fit_square(rgb, 32)
    assert image.size == (32, 32) and len(notes) == 2
