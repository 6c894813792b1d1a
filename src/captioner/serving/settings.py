"""``ServerSettings``: every limit the HTTP service enforces, in one typed, validated place."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from captioner.errors import ConfigError


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching knobs of ``captioner serve``; the defaults suit one CPU machine.

    A request is answered with a JSON error instead of being served when it breaks a limit:
    413 for more than ``max_upload_bytes`` of image (or a body that would hold more) or more than
    ``max_pixels`` pixels, 503 when ``max_queue`` requests are already waiting for the model,
    408 when the client has not sent its body within ``request_timeout_s``, 504 when the caption
    is not ready within it.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    """Largest image file accepted, in bytes (after base64 decoding for JSON requests)."""
    max_pixels: int = 40_000_000
    """Largest width x height accepted; checked from the file header, before decoding."""
    max_held_side: int = 1024
    """Uploads are squeezed to the encoder's input size once decoded (the resize its preprocess
    would do, so captions are unchanged); for a model that does not state that size, pictures
    whose longer side is over this are shrunk to it instead. Either way a waiting request holds
    little memory."""
    max_queue: int = 64
    """Most requests waiting for the model (not counting the batch it is running)."""
    max_batch: int = 16
    """Most pictures in one forward pass; 1 turns batching off."""
    batch_window_ms: float = 10.0
    """How long the first request of a batch waits for others to join it."""
    request_timeout_s: float = 30.0
    """Whole-request deadline: upload, decoding, queueing and captioning."""
    default_beam_size: int = 3
    max_beam_size: int = 10
    decode_threads: int = 2
    """Threads that decode uploads (Pillow releases the GIL), apart from the one model thread."""
    max_connections: int = 256
    """uvicorn's ``limit_concurrency``: connections past this get a plain 503 from uvicorn itself."""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            numeric = float if field.name in {"batch_window_ms", "request_timeout_s"} else int
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"server setting {field.name} must be a number, got {value!r}")
            if numeric is int and not isinstance(value, int):
                raise ConfigError(f"server setting {field.name} must be an integer, got {value!r}")
        positive = ("max_upload_bytes", "max_pixels", "max_held_side", "max_queue", "max_batch",
                    "default_beam_size", "max_beam_size", "decode_threads", "max_connections")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"server setting {name} must be at least 1, got {getattr(self, name)}")
        if self.batch_window_ms < 0:
            raise ConfigError(f"server setting batch_window_ms must be >= 0, got {self.batch_window_ms}")
        if self.request_timeout_s <= 0:
            raise ConfigError(f"server setting request_timeout_s must be > 0, got {self.request_timeout_s}")
        if self.default_beam_size > self.max_beam_size:
            raise ConfigError(
                f"default_beam_size {self.default_beam_size} is over max_beam_size {self.max_beam_size}"
            )

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: an image of ``max_upload_bytes`` as base64 (4/3 larger) plus
        room for the multipart or JSON wrapping around it."""
        return self.max_upload_bytes * 4 // 3 + 64 * 1024

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
