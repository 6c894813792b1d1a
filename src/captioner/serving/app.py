"""``create_app``: the FastAPI application of ``captioner serve`` — routes, limits, JSON errors.

Owns the HTTP contract: ``POST /caption`` (multipart upload, JSON with base64, or raw image
bytes; ``?beam_size=``, ``?guidance=``), ``GET /health``, the page at ``/`` with its files under
``/static``, and the OpenAPI schema FastAPI derives from them. Every failure a request can cause
becomes a JSON body ``{"error": "..."}`` with its status (400, 408, 413, 415, 422, 503, 504, or
500 for a bug), and every exception is caught per request, so no request can take the server down.

Uploads are counted while they are read, so a body without (or with a false) Content-Length
cannot go past the limit; pictures are decoded on a small thread pool through the data layer's
loader (the same rules as ``captioner caption``) and squeezed to the encoder's input size there
(the resize its preprocess does: captions are identical), then wait in the micro-batcher.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, ConfigDict
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from captioner import __version__
from captioner.data.images import load_rgb_image_bytes
from captioner.errors import BadImageError
from captioner.serving.batcher import BatcherClosedError, MicroBatcher, QueueFullError
from captioner.serving.settings import ServerSettings

logger = logging.getLogger("captioner.serving")

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads nothing from elsewhere (it must work offline), so the policy can be strict.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'",
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
}
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


class ApiError(Exception):
    """A request we refuse, with the status and the one-line reason the client gets."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _ClientGone(Exception):
    """The client disconnected; there is nobody to answer."""


class WordAttention(BaseModel):
    word: str
    attention: list[list[float]]
    """grid_h x grid_w weights summing to 1: where the model looked for this word."""


class CaptionResponse(BaseModel):
    """The answer of ``POST /caption`` (documentation only: further fields pass through)."""

    model_config = ConfigDict(extra="allow")
    caption: str
    score: float
    """Log-probability of the caption under the model (higher is more confident)."""
    words: list[WordAttention]
    grid: list[int]
    """[grid_h, grid_w] of the attention maps; they cover the whole picture."""
    image_size: list[int]
    """[width, height] of the upload after EXIF rotation."""
    model: str
    beam_size: int


class ErrorResponse(BaseModel):
    error: str


_ERRORS = {status: {"model": ErrorResponse, "description": text} for status, text in {
    400: "malformed request (bad multipart, JSON or base64; no 'image' field)",
    408: "the client did not send its upload within the request time limit",
    413: "upload over the size limit, or picture over the pixel limit",
    415: "not a readable image (or an unsupported Content-Type)",
    422: "invalid query parameter (beam_size, guidance)",
    503: "the queue in front of the model is full, or the server is shutting down; retry later",
    504: "the caption was not ready within the request time limit",
}.items()}

_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["image"],
                       "properties": {"image": {"type": "string", "format": "binary"}}},
        },
        "application/json": {
            "schema": {"type": "object", "required": ["image"], "properties": {
                "image": {"type": "string", "description": "the image file, base64 (a data: URL is accepted)"},
            }},
        },
        "image/*": {"schema": {"type": "string", "format": "binary"}},
    },
}


class CaptionSettings(NamedTuple):
    """How a request wants its picture captioned; requests with equal settings share a pass."""

    beam_size: int
    guidance: bool | None = None
    """None: the model's own setting (``eval.guidance``)."""


def captioner_batch_function(captioner: Any) -> Callable[[Sequence[Image.Image], CaptionSettings], list[Any]]:
    """The model call the batcher makes: one ``Captioner.caption`` pass over the batch."""

    def run(images: Sequence[Image.Image], settings: CaptionSettings) -> list[Any]:
        return captioner.caption(list(images), beam_size=settings.beam_size, batch_size=max(1, len(images)),
                                 guidance=settings.guidance)

    return run


def model_name(captioner: Any) -> str:
    source = str(getattr(captioner, "source", "") or "")
    return Path(source).name if source else "unknown"


def create_app(
    captioner: Any,
    settings: ServerSettings | None = None,
    run_batch: Callable[[Sequence[Image.Image], CaptionSettings], Sequence[Any]] | None = None,
) -> FastAPI:
    """The service for one loaded ``Captioner``; ``run_batch`` replaces the model call (tests)."""
    settings = settings or ServerSettings()
    name = model_name(captioner)
    input_side = model_input_side(captioner)
    batcher = MicroBatcher(
        run_batch or captioner_batch_function(captioner),
        max_batch=settings.max_batch,
        window_s=settings.batch_window_ms / 1000,
        max_queue=settings.max_queue,
    )
    pools: dict[str, ThreadPoolExecutor] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pools["decode"] = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="captioner-decode")
        await batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            pools.pop("decode").shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="captioner",
        version=__version__,
        description="Caption a photo and see where the model looked for each word "
        "(Show, Attend and Tell). The page at `/` does it in a browser.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.batcher = batcher
    app.state.captioner = captioner

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in error.errors()
        )
        return JSONResponse({"error": problems or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Response:
        return HTMLResponse((STATIC_DIR / "index.html").read_text(encoding="utf-8"), headers=PAGE_HEADERS)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/health", summary="Is the model ready; queue length and limits")
    async def health() -> JSONResponse:
        values = {
            "status": "ok" if batcher.running else "unavailable",
            "model": name,
            "precision": getattr(captioner, "precision", "fp32"),
            "queue": batcher.queue_length,
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_pixels": settings.max_pixels,
                "max_queue": settings.max_queue,
                "max_batch": settings.max_batch,
                "request_timeout_s": settings.request_timeout_s,
                "default_beam_size": settings.default_beam_size,
                "max_beam_size": settings.max_beam_size,
            },
            "batches": batcher.stats.to_dict(),
        }
        return JSONResponse(values, status_code=200 if batcher.running else 503)

    @app.post(
        "/caption",
        summary="Caption one picture; attention map per word",
        description="Send the picture as a multipart form field `image`, as JSON "
        '`{"image": "<base64>"}`, or as the raw bytes with an `image/*` Content-Type. '
        "Requests that arrive together are captioned in one batch.",
        response_model=None,
        responses={200: {"model": CaptionResponse}, **_ERRORS},
        openapi_extra={"requestBody": _REQUEST_BODY},
    )
    async def caption(
        request: Request,
        beam_size: int | None = Query(
            None, ge=1, le=settings.max_beam_size,
            description=f"beams to search (default {settings.default_beam_size})",
        ),
        guidance: bool | None = Query(
            None,
            description="make the caption name what the encoder's ImageNet classifier confidently "
            "sees (default: the model's setting; false: the decoder alone). The labels come either way.",
        ),
    ) -> Response:
        beam = beam_size or settings.default_beam_size
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.request_timeout_s
        try:
            data, filename = await _read_upload(request, settings, deadline)
            image, size = await _decode(loop, pools, data, filename, settings, input_side, deadline)
            result = await _caption(request, batcher, image, CaptionSettings(beam, guidance), deadline)
            return JSONResponse(_response(result, size, name, beam))
        except ApiError as error:
            return JSONResponse({"error": error.message}, status_code=error.status)
        except _ClientGone:
            # Nobody will read this; 499 is what proxies log for it.
            return Response(status_code=499)
        except Exception:  # a bug must cost one request, not the server
            logger.exception("unexpected error while captioning a request")
            return JSONResponse({"error": "internal server error"}, status_code=500)

    return app


async def _read_upload(request: Request, settings: ServerSettings, deadline: float) -> tuple[bytes, str]:
    """The image bytes of the request and a name for messages, or ``ApiError``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (content_type in ("multipart/form-data", "application/json") or content_type.startswith(RAW_IMAGE_TYPES)):
        raise ApiError(415, f"unsupported Content-Type {content_type or '(none)'!r}: send multipart/form-data "
                       "with an 'image' file, JSON {\"image\": \"<base64>\"}, or the image bytes as image/*")
    body = await _read_body(request, settings.max_body_bytes, deadline)
    if content_type == "multipart/form-data":
        data, filename = await _form_image(request, body)
    elif content_type == "application/json":
        data, filename = _json_image(body), "upload"
    else:
        data, filename = body, "upload"
    if len(data) > settings.max_upload_bytes:
        raise ApiError(413, f"the image is {len(data)} bytes, over the limit of {settings.max_upload_bytes}")
    return data, filename


async def _read_body(request: Request, limit: int, deadline: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, f"the request body is {int(declared)} bytes, over the limit of {limit}")
        except ValueError:
            raise ApiError(400, f"invalid Content-Length {declared!r}") from None
    chunks: list[bytes] = []
    received = 0
    try:
        async with asyncio.timeout_at(deadline):
            # Counted as it arrives: a client that sends more than it declared (or declares
            # nothing, chunked) is cut off at the limit instead of filling memory.
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit:
                    raise ApiError(413, f"the request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(408, "the upload did not arrive within the request time limit") from None
    except ClientDisconnect:
        raise _ClientGone from None
    return b"".join(chunks)


async def _form_image(request: Request, body: bytes) -> tuple[bytes, str]:
    sent = False

    async def replay() -> dict[str, Any]:
        # The body is already read (and counted); hand it once to Starlette's form parser.
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16)
    except StarletteHTTPException as error:
        raise ApiError(400, f"malformed multipart body: {error.detail}") from None
    except Exception as error:
        raise ApiError(400, f"malformed multipart body: {error}") from None
    try:
        upload = form.get("image")
        if not isinstance(upload, UploadFile):
            upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
        if upload is None:
            raise ApiError(400, "no file in the form: send the picture in a field named 'image'")
        return await upload.read(), Path(upload.filename or "upload").name
    finally:
        await form.close()


def _json_image(body: bytes) -> bytes:
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    encoded = values.get("image") if isinstance(values, dict) else None
    if not isinstance(encoded, str):
        raise ApiError(400, 'JSON bodies must be {"image": "<base64 of the image file>"}')
    if encoded.startswith("data:"):
        encoded = encoded.partition(",")[2]
    try:
        return base64.b64decode("".join(encoded.split()), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ApiError(400, f"'image' is not valid base64: {error}") from None


def _decode_picture(
    data: bytes, filename: str, settings: ServerSettings, input_side: int | None
) -> tuple[Image.Image, tuple[int, int]]:
    """Check the pixel count from the header, then decode fully (a truncated file fails here)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except Image.DecompressionBombError as error:
        raise ApiError(413, f"too many pixels: {error}") from None
    except Exception:
        width = height = 0  # not an image: the loader below says why, in its own words
    if width * height > settings.max_pixels:
        raise ApiError(413, f"the picture is {width}x{height} = {width * height} pixels, "
                       f"over the limit of {settings.max_pixels}")
    try:
        picture = load_rgb_image_bytes(data, filename)
    except BadImageError as error:
        raise ApiError(415, str(error)) from None
    size = picture.size
    if input_side and size != (input_side, input_side):
        # Exactly the resize the encoder's preprocess would do on the model thread (it skips a
        # picture already at its size), done here in parallel: same pixels, same caption, and a
        # waiting request holds a few hundred kB instead of the full photo.
        picture = picture.resize((input_side, input_side), Image.Resampling.BILINEAR)
    elif not input_side and max(size) > settings.max_held_side:
        picture.thumbnail((settings.max_held_side, settings.max_held_side), Image.Resampling.BILINEAR)
    return picture, size


def model_input_side(captioner: Any) -> int | None:
    """The square side the encoder squeezes every picture to, where the model says so."""
    preprocess = getattr(getattr(getattr(captioner, "model", None), "encoder", None), "preprocess", None)
    side = getattr(preprocess, "image_size", None)
    return side if isinstance(side, int) and side > 0 else None


async def _decode(
    loop: asyncio.AbstractEventLoop, pools: dict[str, ThreadPoolExecutor], data: bytes, filename: str,
    settings: ServerSettings, input_side: int | None, deadline: float,
) -> tuple[Image.Image, tuple[int, int]]:
    try:
        async with asyncio.timeout_at(deadline):
            return await loop.run_in_executor(pools["decode"], _decode_picture, data, filename, settings, input_side)
    except TimeoutError:
        raise ApiError(504, "decoding the picture took longer than the request time limit") from None


async def _until_disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _caption(
    request: Request, batcher: MicroBatcher, image: Image.Image, options: CaptionSettings, deadline: float
) -> Any:
    captioning = asyncio.ensure_future(batcher.submit(image, options))
    # The body is fully read, so the next message can only be the client going away; then the
    # request leaves the queue instead of costing a place in a batch.
    watching = asyncio.ensure_future(_until_disconnected(request))
    try:
        async with asyncio.timeout_at(deadline):
            await asyncio.wait({captioning, watching}, return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        raise ApiError(504, "the caption was not ready within the request time limit; retry later") from None
    finally:
        watching.cancel()
        if not captioning.done():
            captioning.cancel()
    if not captioning.done() or captioning.cancelled():
        raise _ClientGone
    try:
        result = captioning.result()
    except QueueFullError as error:
        raise ApiError(503, f"the server is busy ({error}); retry in a moment") from None
    except BatcherClosedError as error:
        raise ApiError(503, str(error)) from None
    except Exception as error:
        logger.exception("captioning failed", exc_info=error)
        raise ApiError(500, f"captioning failed: {type(error).__name__}") from None
    if getattr(result, "error", None):
        raise ApiError(415, str(result.error))
    return result


def _response(result: Any, size: tuple[int, int], model: str, beam: int) -> dict[str, Any]:
    # Built from to_dict so that fields the library adds to results reach clients unchanged.
    values = result.to_dict(include_attention=True)
    values.pop("source", None)
    words = values.pop("words", None) or []
    attention = values.pop("attention", None) or [[]] * len(words)
    values["words"] = [{"word": word, "attention": grid} for word, grid in zip(words, attention)]
    values["grid"] = list(result.attention.shape[1:]) if getattr(result, "attention", None) is not None else []
    values["image_size"] = list(size)
    values["model"] = model
    values["beam_size"] = beam
    return values
