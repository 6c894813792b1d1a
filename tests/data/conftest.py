"""Shared helpers for the data tests: tiny image files written into ``tmp_path``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

ImageWriter = Callable[..., Path]


@pytest.fixture
def write_image() -> ImageWriter:
    """``write_image(path, colour=(r, g, b), size=(w, h))`` writes a small picture and returns it."""

    def write(path: Path, colour: tuple[int, int, int] = (200, 30, 30),
              size: tuple[int, int] = (8, 6)) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, colour).save(path)
        return path

    return write
