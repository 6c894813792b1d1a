"""Fixtures for the HTTP service: the tiny trained model, small pictures, a live uvicorn server."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install 'captioner[serve]'")


@pytest.fixture(scope="session")
def tiny_captioner(tiny_run: Path):
    import torch

    from captioner.api import Captioner

    torch.set_num_threads(1)
    return Captioner.from_pretrained(tiny_run, device="cpu")


def png_bytes(
    size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 40, 40), noise: bool = False
) -> bytes:
    if noise:
        import numpy as np

        pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        image = Image.fromarray(pixels, "RGB")
    else:
        image = Image.new("RGB", size, colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, (30, 120, 200))
    for x in range(0, size[0], 8):
        image.paste((240, 200, 20), (x, 0, x + 4, size[1]))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """uvicorn serving an app on 127.0.0.1 in a background thread, like ``captioner serve``."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                limit_concurrency=64, timeout_keep_alive=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-test", daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture(scope="module")
def live_server(tiny_captioner) -> Iterator[LiveServer]:
    from captioner.serving.app import create_app
    from captioner.serving.settings import ServerSettings

    app = create_app(tiny_captioner, ServerSettings(max_upload_bytes=200_000, request_timeout_s=20))
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def make_png():
    """``make_png(size, colour, noise=False) -> bytes`` of a PNG file."""
    return png_bytes


@pytest.fixture(scope="session")
def make_jpeg():
    """``make_jpeg(size) -> bytes`` of a striped JPEG file."""
    return jpeg_bytes


@pytest.fixture(scope="session")
def serve_in_thread():
    """``with serve_in_thread(app) as server:`` runs ``app`` under uvicorn at ``server.url``."""
    return LiveServer
