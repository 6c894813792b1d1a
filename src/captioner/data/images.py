"""Reading any image file a user has into an upright RGB picture, or one clear error.

Owns: opening with Pillow (regular files only: a FIFO named like an image must not hang;
Pillow's warnings about damaged metadata go to the debug log), applying the EXIF orientation,
converting every Pillow mode to RGB (transparency composited on white, 16-bit and float images
scaled rather than clipped), keeping Pillow's decompression-bomb limit on (its warning is
treated as an error too) and forcing the pixel data to load here so that a truncated file fails
here, as a ``BadImageError`` naming the file. Must not know about encoders: resizing and
normalizing for a network is the encoder's preprocess, so this module never resizes. There is
deliberately no augmentation here. Flipping swaps left and right and makes captions such as
"a dog to the left of a man" false, so the one flip in the project (training on mirrored
features, ``captioner features --mirror``) skips every photo whose captions say left or right.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from captioner.errors import BadImageError

logger = logging.getLogger("captioner.data")

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
)
"""Lower-case file suffixes treated as images when scanning a folder."""

_WHITE = (255, 255, 255)
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _scale_to_8_bit(image: Image.Image) -> Image.Image:
    """A grey ``L`` image from 16-bit/32-bit/float pixels, scaled so that detail is not clipped.

    16-bit images map 0..65535 to 0..255; ``I`` images use that too unless all values already fit
    in 0..255; float images are taken as 0..1 when they fit there, else as 0..255; anything
    outside those ranges is stretched from its own minimum to maximum.
    """
    pixels = np.asarray(image, dtype=np.float64)
    low, high = (float(pixels.min()), float(pixels.max())) if pixels.size else (0.0, 0.0)
    if image.mode.startswith("I;16"):
        scaled = pixels / 257.0
    elif image.mode == "F" and 0.0 <= low and high <= 1.0:
        scaled = pixels * 255.0
    elif 0.0 <= low and high <= 255.0:
        scaled = pixels
    elif image.mode == "I" and 0.0 <= low and high <= 65535.0:
        scaled = pixels / 257.0
    else:
        scaled = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        return _scale_to_8_bit(image).convert("RGB")
    has_alpha = "A" in image.getbands() or "a" in image.mode or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*_WHITE, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    # A mode Pillow cannot convert (e.g. LAB) raises ValueError, reported as a BadImageError.
    return image.convert("RGB")


def _upright(image: Image.Image, name: str) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception as error:  # a corrupt EXIF block must not make a good picture unreadable
        logger.debug("ignoring unreadable EXIF orientation of %s: %s", name, error)
        return image


def _reason_and_fix(error: BaseException, source: BinaryIO) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file; check the path"
    if isinstance(error, IsADirectoryError):
        return "it is a folder, not a file; pass an image file"
    if isinstance(error, PermissionError):
        return "permission denied; make the file readable"
    if isinstance(error, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        limit = Image.MAX_IMAGE_PIXELS
        return (
            f"too many pixels ({error}); Pillow refuses images over about {limit} pixels to "
            "guard against decompression bombs: downscale it below that first"
        )
    if isinstance(error, UnidentifiedImageError):
        source.seek(0, io.SEEK_END)
        if source.tell() == 0:
            return "the file is empty (0 bytes); re-copy or re-download it"
        return (
            "not an image format Pillow can read (a renamed text/HTML file?); "
            "re-save it as JPEG or PNG"
        )
    message = str(error) or type(error).__name__
    if "truncated" in message or isinstance(error, (EOFError, SyntaxError)):
        return f"the file is truncated or corrupt ({message}); re-copy or re-download it"
    return f"{message}; re-save it as JPEG or PNG"


def _refuse_bombs(image: Image.Image) -> None:
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that. The warnings filter above makes
    # that an error, but warning filters are process-wide state that another thread may be
    # changing at the same moment, so the size is checked here as well.
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    if limit is not None and width * height > limit:
        raise Image.DecompressionBombError(
            f"{width}x{height} = {width * height} pixels, over the limit of {limit}"
        )


def _read(source: BinaryIO, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings(record=True) as caught:
            # Pillow warns about damaged metadata (e.g. "Truncated File Read" in a TIFF tag) of
            # files it still decodes; those go to the debug log, not as warnings on the
            # user's terminal. The bomb warning is the one that must stop the load.
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
            _refuse_bombs(image)
            image.load()
            picture = _to_rgb(_upright(image, name)).copy()
        for warning in caught:
            logger.debug("%s: %s", name, warning.message)
        return picture
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError,
            Image.DecompressionBombWarning, MemoryError) as error:
        raise BadImageError(f"cannot read image {name}: {_reason_and_fix(error, source)}") from None


def rgb_image(image: Image.Image, name: str) -> Image.Image:
    """An in-memory picture as RGB by the same rules as the file loaders (no EXIF rotation:
    the caller's pixels are taken as they are), or ``BadImageError``."""
    try:
        _refuse_bombs(image)
        return _to_rgb(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise BadImageError(f"cannot read image {name}: {error}") from None


def _why_not_opened(error: OSError | ValueError, path: Path) -> str:
    if isinstance(error, ValueError):  # open() refuses a path with a NUL byte in it
        return f"not a usable file name ({error}); check the path"
    if isinstance(error, FileNotFoundError) and path.is_symlink():
        return f"a broken symbolic link (to {os.readlink(path)}); fix or remove the link"
    if error.errno == errno.ELOOP:
        return "a symbolic link loop; fix or remove the link"
    if isinstance(error, (FileNotFoundError, IsADirectoryError, PermissionError)):
        return _reason_and_fix(error, io.BytesIO())
    return f"{error.strerror or error}; check the path"


def _open_regular_file(path: Path) -> BinaryIO:
    # O_NONBLOCK: opening a FIFO named like an image must not wait forever for a writer; the
    # flag changes nothing for regular files, and anything else is refused right after.
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    mode = os.fstat(descriptor).st_mode
    if stat.S_ISDIR(mode):
        os.close(descriptor)
        raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
    if not stat.S_ISREG(mode):
        os.close(descriptor)
        raise BadImageError(f"cannot read image {path}: not a regular file (a pipe, socket or device); "
                            "pass an image file")
    return os.fdopen(descriptor, "rb")


def load_rgb_image(path: str | Path) -> Image.Image:
    """Open ``path`` as an upright RGB picture at its own size, or raise ``BadImageError``."""
    path = Path(path)
    try:
        with _open_regular_file(path) as file:
            return _read(file, str(path))
    except (OSError, ValueError) as error:
        raise BadImageError(f"cannot read image {path}: {_why_not_opened(error, path)}") from None


def load_rgb_image_bytes(data: bytes, name: str) -> Image.Image:
    """Like ``load_rgb_image`` for bytes already in memory (an upload); ``name`` is for messages."""
    return _read(io.BytesIO(data), name)
