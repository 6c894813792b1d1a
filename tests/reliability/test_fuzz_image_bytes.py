"""Property-based fuzzing of image bytes: random bytes and mutated JPEG/PNG/GIF/WebP files.

Whatever the bytes, the loader returns an RGB picture or raises ``BadImageError`` naming the
input, and ``Captioner.caption`` returns one result per input (a caption or ``error``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner.data.images import load_rgb_image_bytes
from captioner.errors import BadImageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import encode, photo_like  # noqa: E402

NAME = "fuzzed upload.jpg"
# FUZZ_EXAMPLES=5000 for a long run; the default keeps the whole folder well under a minute.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "150"))
_PHOTO = photo_like(40, 30, seed=5)
SEEDS = {
    "jpeg": encode(_PHOTO, "JPEG", quality=80),
    "progressive_jpeg": encode(_PHOTO, "JPEG", quality=80, progressive=True),
    "png": encode(_PHOTO, "PNG"),
    "palette_png": encode(_PHOTO.convert("P"), "PNG", transparency=0),
    "gif": encode(_PHOTO, "GIF"),
    "webp": encode(_PHOTO, "WEBP", quality=70),
    "tiff": encode(_PHOTO, "TIFF"),  # damaged tags make Pillow warn: those must not reach the user
}


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid file with a few bytes overwritten, inserted or deleted, and maybe cut short.

    Edits favour the first 100 bytes, where headers (sizes, modes, chunk lengths) live."""
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 6))):
        in_header = draw(st.booleans())
        position = draw(st.integers(0, min(len(data), 100) - 1 if in_header else len(data) - 1))
        operation = draw(st.sampled_from(["set", "insert", "delete"]))
        if operation == "set":
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif len(data) > 1:
            del data[position]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _check_one(data: bytes) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning leaking out of the loader fails the test
            image = load_rgb_image_bytes(data, NAME)
    except BadImageError as error:
        assert NAME in str(error)
        assert "\n" not in str(error)
        return
    assert image.mode == "RGB" and image.width >= 1 and image.height >= 1


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=4096))
def test_random_bytes_load_or_fail_cleanly(data):
    _check_one(data)


@settings(max_examples=2 * EXAMPLES, deadline=None)
@given(mutated_images())
def test_mutated_image_files_load_or_fail_cleanly(data):
    _check_one(data)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(mutated_images(), st.binary(max_size=64)), min_size=1, max_size=6))
def test_captioning_fuzzed_bytes_gives_one_result_per_input(tiny_captioner, inputs):
    results = tiny_captioner.caption(inputs, beam_size=2)
    assert len(results) == len(inputs)
    for index, result in enumerate(results):
        assert result.source == f"<image {index}>"
        if result.ok:
            assert isinstance(result.caption, str) and result.attention.shape[0] == len(result.words)
        else:
            assert result.caption is None and f"<image {index}>" in result.error
