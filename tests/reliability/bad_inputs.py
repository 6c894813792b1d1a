"""A corpus of bad and awkward image inputs, generated on the spot (nothing is checked in).

``build_corpus(root)`` writes every case under ``root`` and returns one ``Case`` per path, saying
whether the project must caption it (``readable``) or report it by name. Used by the tests in
this folder and by ``benchmarks/bad_input_corpus.py``, which counts outcomes for RELIABILITY.md.

Cases: truncated JPEG (baseline and progressive), PNG, GIF and WebP files cut at many points;
zero-byte files of every extension; text, HTML, JSON, PDF and random bytes named like images;
decompression bombs (headers claiming 100,000 x 100,000 pixels, and one just over Pillow's
limit); pictures that are odd but fine (1x1, 1-pixel strips, 16-bit, CMYK, palette with
transparency, animated GIF, EXIF-rotated, corrupt EXIF, grey, bilevel, BMP/TIFF/WebP, PNG bytes
named .jpg and the reverse, names with spaces and non-ASCII letters, upper-case extensions); a
folder named like an image; broken symlinks, a symlink loop and a folder symlink loop; a FIFO
named like an image; and a file nobody may read (only when not running as root, since root
reads it anyway).
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

RUNNING_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
PERMISSION_SKIP_REASON = "running as root: root reads a chmod 000 file anyway"


@dataclass(frozen=True)
class Case:
    path: str
    """Relative to the corpus root, ``/`` separated."""
    kind: str
    readable: bool
    """True: must be captioned. False: must be reported by name, and the rest still captioned."""
    size: tuple[int, int] | None = None
    """(width, height) the loader must return, where it matters (EXIF rotation, strips)."""
    pixel: tuple[tuple[int, int], tuple[int, int, int]] | None = None
    """((x, y), rgb) the loaded picture must show there, within a small tolerance."""
    listed: bool = True
    """Whether ``caption-dir`` must list it (False for folders, which it walks instead)."""


def photo_like(width: int = 96, height: int = 64, seed: int = 0) -> Image.Image:
    """A smooth picture with some texture, so that JPEG and PNG files have real entropy data."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 128 + 100 * np.sin(x / 9.0)
    green = 128 + 100 * np.cos(y / 7.0)
    blue = 128 + 60 * np.sin((x + y) / 11.0)
    pixels = np.stack([red, green, blue], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header that claims ``width`` x ``height`` RGB pixels, with almost no data."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def gif_claiming(width: int, height: int) -> bytes:
    """A GIF logical screen and image descriptor claiming ``width`` x ``height``."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, width, height, 0)
    return screen + descriptor + b"\x02\x02\x44\x01\x00;"


def cut_points(length: int, count: int, last: int) -> list[int]:
    """``count`` distinct cut positions spread over 1..``last`` (bytes kept)."""
    return sorted({int(round(v)) for v in np.linspace(1, min(last, length - 1), count)})


def _write(root: Path, relative: str, data: bytes) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _save(root: Path, relative: str, image: Image.Image, fmt: str, **options: object) -> None:
    _write(root, relative, encode(image, fmt, **options))


def _good_cases(root: Path) -> list[Case]:
    cases: list[Case] = []

    def add(relative: str, image: Image.Image, fmt: str, kind: str, size=None, pixel=None, **options) -> None:
        _save(root, relative, image, fmt, **options)
        cases.append(Case(relative, kind, True, size, pixel))

    red, blue = (255, 0, 0), (0, 0, 255)
    add("odd/one_pixel.png", Image.new("RGB", (1, 1), red), "PNG", "1x1 image", (1, 1), ((0, 0), red))
    add("odd/one_pixel.jpg", Image.new("RGB", (1, 1), (200, 200, 200)), "JPEG", "1x1 image", (1, 1))
    add("odd/one_pixel.gif", Image.new("L", (1, 1), 90), "GIF", "1x1 image", (1, 1))
    add("odd/wide_strip.png", Image.new("RGB", (400, 1), blue), "PNG", "1-pixel strip", (400, 1), ((200, 0), blue))
    add("odd/tall_strip.png", Image.new("RGB", (1, 400), blue), "PNG", "1-pixel strip", (1, 400))

    sixteen = Image.frombytes("I;16", (3, 1), np.array([0, 32896, 65535], "<u2").tobytes())
    add("modes/sixteen_bit.png", sixteen, "PNG", "16-bit PNG (I;16)", (3, 1), ((1, 0), (128, 128, 128)))
    add("modes/cmyk.jpg", Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", "CMYK JPEG", (16, 16), ((8, 8), red))
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    palette.putpixel((1, 0), 1)
    add("modes/palette_transparent.png", palette, "PNG", "palette PNG with transparency", (2, 1),
        ((1, 0), (255, 255, 255)), transparency=1)
    frames = [Image.new("RGB", (16, 16), colour) for colour in (red, (0, 255, 0), blue)]
    add("modes/animated.gif", frames[0], "GIF", "animated GIF (first frame used)", (16, 16), ((8, 8), red),
        save_all=True, append_images=frames[1:], duration=50, loop=0)
    halves = np.zeros((20, 40, 3), np.uint8)
    halves[:, :20], halves[:, 20:] = red, blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display: the stored left half ends up on top
    add("modes/exif_rotated.jpg", Image.fromarray(halves), "JPEG", "EXIF-rotated JPEG", (20, 40), ((10, 4), red),
        exif=exif.tobytes(), quality=95)
    broken_exif = encode(photo_like(32, 24), "JPEG", exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff")
    _write(root, "modes/corrupt_exif.jpg", broken_exif)
    cases.append(Case("modes/corrupt_exif.jpg", "corrupt EXIF block (ignored)", True, (32, 24)))
    add("modes/grey.jpg", Image.new("L", (8, 8), 60), "JPEG", "greyscale JPEG", (8, 8))
    add("modes/bilevel.png", Image.new("1", (8, 8), 1), "PNG", "1-bit PNG", (8, 8), ((4, 4), (255, 255, 255)))
    add("modes/rgba.png", Image.new("RGBA", (8, 8), (0, 0, 255, 0)), "PNG", "RGBA PNG", (8, 8), ((4, 4), (255, 255, 255)))
    add("modes/grey_alpha.png", Image.new("LA", (8, 8), (0, 255)), "PNG", "LA PNG", (8, 8), ((4, 4), (0, 0, 0)))
    photo = photo_like(48, 32, seed=3)
    add("formats/photo.bmp", photo, "BMP", "BMP", (48, 32))
    add("formats/photo.tiff", photo, "TIFF", "TIFF", (48, 32))
    add("formats/photo.webp", photo, "WEBP", "WebP", (48, 32), lossless=True)
    add("wrong_extension/png_bytes.jpg", photo, "PNG", "PNG bytes named .jpg", (48, 32))
    add("wrong_extension/jpeg_bytes.png", photo, "JPEG", "JPEG bytes named .png", (48, 32))
    add("wrong_extension/gif_bytes.jpeg", photo, "GIF", "GIF bytes named .jpeg", (48, 32))
    add("names/with space.png", photo, "PNG", "name with spaces", (48, 32))
    add("names/café ünïcödé 日本.jpg", photo, "JPEG", "non-ASCII name", (48, 32))
    add("names/UPPER CASE.JPG", photo, "JPEG", "upper-case extension", (48, 32))
    add("names/mixed.JpEg", photo, "JPEG", "mixed-case extension", (48, 32))
    add("album.jpg/inside.png", photo, "PNG", "image inside a folder named like an image", (48, 32))
    add("nested/deeper/still deeper/deep.png", photo, "PNG", "deeply nested", (48, 32))
    return cases


def _truncated_cases(root: Path) -> list[Case]:
    cases: list[Case] = []
    photo = photo_like()
    # ``last``: the most bytes a cut keeps and still loses pixel data. A file missing only its
    # end marker (JPEG EOI, PNG IEND and the last IDAT's CRC) still holds the whole picture,
    # and Pillow rightly reads it.
    sources = [
        ("jpeg", encode(photo, "JPEG", quality=85), ".jpg", 70, -3),
        ("progressive_jpeg", encode(photo, "JPEG", quality=85, progressive=True), ".jpg", 20, -3),
        ("png", encode(photo, "PNG"), ".png", 70, -24),
        ("gif", encode(photo, "GIF"), ".gif", 12, -3),
        ("webp", encode(photo, "WEBP", quality=80), ".webp", 12, -1),
    ]
    for name, data, suffix, count, last_offset in sources:
        for cut in cut_points(len(data), count, len(data) + last_offset):
            relative = f"truncated/{name}_{cut:06d}_of_{len(data)}{suffix}"
            _write(root, relative, data[:cut])
            cases.append(Case(relative, f"truncated {name.replace('_', ' ')}", False))
    return cases


def _junk_cases(root: Path) -> list[Case]:
    cases: list[Case] = []
    for suffix in (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".webp", ".JPG"):
        relative = f"empty/zero_bytes{suffix}"
        _write(root, relative, b"")
        cases.append(Case(relative, "zero-byte file", False))
    junk = {
        "junk/text_renamed.jpg": b"These are my holiday notes, not a photo.\n",
        "junk/web_page.png": b"<!DOCTYPE html><html><body>404 Not Found</body></html>\n",
        "junk/data.jpeg": b'{"photo": "not really"}\n',
        "junk/document.jpg": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "junk/random_bytes.jpg": np.random.default_rng(7).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "junk/jpeg_header_only.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
        "junk/png_signature_only.png": b"\x89PNG\r\n\x1a\n",
    }
    for relative, data in junk.items():
        _write(root, relative, data)
        cases.append(Case(relative, "not an image (renamed text, HTML, JSON, PDF, random bytes, bare header)", False))
    bombs = {
        "bombs/claims_100k_x_100k.png": png_claiming(100_000, 100_000),
        "bombs/claims_10k_x_10k.png": png_claiming(10_000, 10_000),  # just over Pillow's limit (warning zone)
        "bombs/claims_65535_x_65535.gif": gif_claiming(65_535, 65_535),
    }
    for relative, data in bombs.items():
        _write(root, relative, data)
        cases.append(Case(relative, "decompression bomb (huge claimed dimensions)", False))
    return cases


def _filesystem_cases(root: Path) -> list[Case]:
    cases = [Case("album.jpg", "folder named like an image", False, listed=False)]
    links = root / "links"
    links.mkdir(parents=True, exist_ok=True)
    os.symlink("no_such_target.jpg", links / "dangling.jpg")
    cases.append(Case("links/dangling.jpg", "broken symlink", False))
    os.symlink("loop_b.jpg", links / "loop_a.jpg")
    os.symlink("loop_a.jpg", links / "loop_b.jpg")
    cases += [Case("links/loop_a.jpg", "symlink loop", False), Case("links/loop_b.jpg", "symlink loop", False)]
    os.symlink("..", links / "up")  # a folder loop: walking must end, and list nothing twice
    cases.append(Case("links/up", "folder symlink loop", False, listed=False))
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "links" / "pipe.jpg")
        cases.append(Case("links/pipe.jpg", "FIFO named like an image (must not hang)", False))
    if not RUNNING_AS_ROOT:
        locked = root / "locked" / "no_permission.jpg"
        locked.parent.mkdir(parents=True, exist_ok=True)
        locked.write_bytes(encode(photo_like(16, 16), "JPEG"))
        locked.chmod(0)
        cases.append(Case("locked/no_permission.jpg", "unreadable permissions (chmod 000)", False))
    return cases


def build_corpus(root: Path) -> list[Case]:
    """Write the whole corpus under ``root`` (which must not exist yet, or be empty)."""
    root.mkdir(parents=True, exist_ok=True)
    cases = _good_cases(root) + _truncated_cases(root) + _junk_cases(root) + _filesystem_cases(root)
    # A hidden folder is not part of the photos: caption-dir must not list what is inside.
    _save(root, ".thumbnails/hidden.jpg", photo_like(8, 8), "JPEG")
    return cases


# Annotation files for fuzzing the dataset readers: each format's writer puts a valid (or
# mutated) annotation file next to two small images and returns the dataset folder.

COCO = {
    "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
    "annotations": [{"id": 10, "image_id": 1, "caption": "a dog runs"}, {"id": 11, "image_id": 2, "caption": "a cat"}],
}
KARPATHY = {
    "images": [
        {"filename": "a.jpg", "filepath": "images", "split": "train", "sentences": [{"raw": "a dog runs"}], "cocoid": 1},
        {"filename": "b.jpg", "filepath": "images", "split": "val", "sentences": [{"raw": "a cat"}], "cocoid": 2},
    ]
}
FLICKR_TOKENS = "a.jpg#0\ta dog runs\na.jpg#1\ta dog\nb.jpg#0\ta cat sits\n"
FOLDER_CSV = 'image,caption,split\nimages/a.jpg,a dog runs,train\nimages/b.jpg,"a cat, sitting",val\n'
FOLDER_JSONL = '{"image": "images/a.jpg", "caption": "a dog runs"}\n{"image": "images/b.jpg", "captions": ["a cat", "x"], "split": "val"}\n'


def _two_images(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (4, 4), (9, 9, 9)).save(root / "images" / name)


def coco_dataset(root: Path, content: bytes) -> Path:
    _two_images(root)
    (root / "annotations").mkdir()
    (root / "annotations" / "captions_train2014.json").write_bytes(content)
    return root


def karpathy_dataset(root: Path, content: bytes) -> Path:
    _two_images(root)
    (root / "dataset_flickr8k.json").write_bytes(content)
    return root


def flickr8k_dataset(root: Path, content: bytes) -> Path:
    _two_images(root)
    (root / "Flickr8k.token.txt").write_bytes(content)
    (root / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    return root


def folder_csv_dataset(root: Path, content: bytes) -> Path:
    _two_images(root)
    (root / "captions.csv").write_bytes(content)
    return root


def folder_jsonl_dataset(root: Path, content: bytes) -> Path:
    _two_images(root)
    (root / "captions.jsonl").write_bytes(content)
    return root


ANNOTATION_FORMATS: dict[str, tuple[Callable[[Path, bytes], Path], bytes]] = {
    # name: (write(dataset_root, annotation bytes) -> dataset_root, a valid annotation file)
    "coco": (coco_dataset, json.dumps(COCO).encode()),
    "karpathy": (karpathy_dataset, json.dumps(KARPATHY).encode()),
    "flickr8k": (flickr8k_dataset, FLICKR_TOKENS.encode()),
    "folder_csv": (folder_csv_dataset, FOLDER_CSV.encode()),
    "folder_jsonl": (folder_jsonl_dataset, FOLDER_JSONL.encode()),
}



def unlock(root: Path) -> None:
    """Give back read permission so that temporary folders can be removed."""
    locked = root / "locked" / "no_permission.jpg"
    if locked.exists():
        locked.chmod(0o644)
