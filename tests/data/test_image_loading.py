"""Image loading: every Pillow mode to RGB, EXIF rotation, and broken files as BadImageError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.data.images import IMAGE_EXTENSIONS, load_rgb_image, load_rgb_image_bytes
from captioner.errors import BadImageError


def _saved(tmp_path: Path, image: Image.Image, suffix: str) -> Path:
    path = tmp_path / f"picture_{image.mode.replace(';', '_')}{suffix}"
    image.save(path)
    with Image.open(path) as reopened:  # the file really holds the mode under test
        assert reopened.mode == image.mode
    return path


def _pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    assert image.mode == "RGB"
    return [tuple(int(v) for v in p) for p in np.asarray(image).reshape(-1, 3)]


def _palette_image(mode: str) -> Image.Image:
    image = Image.new(mode, (2, 1))
    palette = [255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6)
    image.putpalette(palette)
    image.putpixel((0, 0), 0 if mode == "P" else (0, 255))
    image.putpixel((1, 0), 1 if mode == "P" else (1, 0))
    return image


@pytest.mark.parametrize(
    ("make", "suffix", "expected"),
    [
        (lambda: Image.new("L", (1, 1), 100), ".png", [(100, 100, 100)]),
        (lambda: Image.frombytes("LA", (2, 1), bytes([100, 255, 100, 0])), ".png",
         [(100, 100, 100), (255, 255, 255)]),
        (lambda: _palette_image("P"), ".png", [(255, 0, 0), (0, 0, 255)]),
        (lambda: Image.frombytes("RGBA", (3, 1), bytes([10, 20, 30, 255, 10, 20, 30, 0, 0, 0, 0, 128])),
         ".png", [(10, 20, 30), (255, 255, 255), (127, 127, 127)]),
        (lambda: Image.frombytes("CMYK", (2, 1), bytes([0, 0, 0, 0, 0, 255, 255, 0])), ".tif",
         [(255, 255, 255), (255, 0, 0)]),
        (lambda: Image.frombytes("I;16", (3, 1), np.array([0, 32896, 65535], "<u2").tobytes()), ".png",
         [(0, 0, 0), (128, 128, 128), (255, 255, 255)]),
        (lambda: Image.fromarray(np.array([[0, 1000, 65535]], np.int32), mode="I"), ".tif",
         [(0, 0, 0), (4, 4, 4), (255, 255, 255)]),
        (lambda: Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), mode="F"), ".tif",
         [(0, 0, 0), (128, 128, 128), (255, 255, 255)]),
        (lambda: Image.frombytes("1", (8, 1), bytes([0b10000000])), ".png",
         [(255, 255, 255)] + [(0, 0, 0)] * 7),
    ],
    ids=["L", "LA", "P", "RGBA", "CMYK", "I;16", "I", "F", "1"],
)
def test_every_mode_becomes_rgb_with_alpha_on_white(tmp_path, make, suffix, expected):
    image = make()
    loaded = load_rgb_image(_saved(tmp_path, image, suffix))
    assert loaded.size == image.size
    assert _pixels(loaded) == expected


def test_palette_with_alpha_mode_is_composited_on_white():
    # No Pillow writer stores mode PA, so no file can hold it: convert the in-memory image.
    from captioner.data.images import _to_rgb

    image = _palette_image("PA")
    assert image.mode == "PA"
    assert _pixels(_to_rgb(image)) == [(255, 0, 0), (255, 255, 255)]


def test_palette_transparency_is_composited_on_white(tmp_path):
    image = _palette_image("P")
    path = tmp_path / "transparent.png"
    image.save(path, transparency=1)
    assert _pixels(load_rgb_image(path)) == [(255, 0, 0), (255, 255, 255)]


def test_exif_orientation_is_applied(tmp_path):
    image = Image.new("RGB", (40, 20), (255, 0, 0))
    image.paste((0, 0, 255), (20, 0, 40, 20))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    loaded = load_rgb_image(path)
    assert loaded.size == (20, 40)
    top, bottom = np.asarray(loaded)[5, 10], np.asarray(loaded)[35, 10]
    assert top[0] > 200 and top[2] < 60  # red on top
    assert bottom[2] > 200 and bottom[0] < 60  # blue below


def test_rgb_is_returned_at_its_own_size_without_resizing(tmp_path):
    path = tmp_path / "plain.png"
    Image.new("RGB", (37, 11), (1, 2, 3)).save(path)
    loaded = load_rgb_image(path)
    assert loaded.size == (37, 11) and _pixels(loaded)[0] == (1, 2, 3)


def _noise_png(path: Path) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_file(tmp_path, suffix):
    path = tmp_path / f"cut{suffix}"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadImageError, match=r"cannot read image .*cut.*truncated or corrupt") as caught:
        load_rgb_image(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.jpg: the file is empty \(0 bytes\)"):
        load_rgb_image(path)


def test_text_file_renamed_to_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("<html>this is not a picture</html>")
    with pytest.raises(BadImageError, match=r"notes\.jpg: not an image format Pillow can read"):
        load_rgb_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(BadImageError, match=r"missing\.png: no such file"):
        load_rgb_image(tmp_path / "missing.png")


@pytest.mark.parametrize("side", [40, 64])  # 1,600 px: Pillow warns; 4,096 px: Pillow refuses
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, side):
    path = tmp_path / "bomb.png"
    Image.new("L", (side, side)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(BadImageError, match=r"bomb\.png: too many pixels.*decompression bombs"):
        load_rgb_image(path)


def test_bytes_loader_uses_the_given_name(tmp_path):
    data = _noise_png(tmp_path / "ok.png").read_bytes()
    assert load_rgb_image_bytes(data, "upload.png").size == (64, 64)
    with pytest.raises(BadImageError, match=r"cannot read image upload\.png: the file is empty"):
        load_rgb_image_bytes(b"", "upload.png")
    with pytest.raises(BadImageError, match=r"upload\.png: .*truncated"):
        load_rgb_image_bytes(data[: len(data) // 2], "upload.png")


def test_image_extensions_are_lower_case_suffixes():
    assert {".jpg", ".jpeg", ".png"} <= IMAGE_EXTENSIONS
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
