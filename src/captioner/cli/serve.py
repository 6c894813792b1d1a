"""``captioner serve``: the HTTP API and web page (``captioner.serving``) under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

from captioner.cli._common import add_precision_argument, report_precision
from captioner.errors import CaptionerError

logger = logging.getLogger("captioner.serving")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve the HTTP API and the web page",
        description="Serve POST /caption, GET /health, the OpenAPI docs at /docs and a web page at / "
        "that captions a photo and shows each word's attention. Needs the 'serve' extra: "
        "pip install 'captioner[serve]'. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    parser.add_argument("--checkpoint", help="run directory or shipped model name (default: the shipped model)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    limits = parser.add_argument_group("limits and batching")
    limits.add_argument("--max-upload-mb", type=float, default=10.0, help="largest image file (default 10)")
    limits.add_argument("--max-pixels", type=int, default=40_000_000, help="largest width x height (default 40M)")
    limits.add_argument("--max-queue", type=int, default=64, help="requests waiting for the model before 503")
    limits.add_argument("--max-batch", type=int, default=16, help="pictures per forward pass; 1 disables batching")
    limits.add_argument("--batch-window-ms", type=float, default=10.0, help="how long a batch waits to fill")
    limits.add_argument("--request-timeout", type=float, default=30.0, help="seconds per request (408/504 after)")
    limits.add_argument("--beam-size", type=int, default=3, help="default beam size")
    limits.add_argument("--max-beam-size", type=int, default=10)
    limits.add_argument("--max-connections", type=int, default=256, help="open connections before plain 503s")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401  (python-multipart, for uploads)
        import uvicorn
    except ImportError as error:
        print(f"captioner serve needs the 'serve' extra ({error.name} is missing): "
              "pip install 'captioner[serve]'", file=sys.stderr)
        return 2
    import torch
    from PIL import Image

    from captioner.api import Captioner
    from captioner.serving.app import create_app
    from captioner.serving.settings import ServerSettings

    settings = ServerSettings(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_pixels=args.max_pixels,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        request_timeout_s=args.request_timeout,
        default_beam_size=args.beam_size,
        max_beam_size=args.max_beam_size,
        max_connections=args.max_connections,
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
    report_precision(args.precision, captioner)
    # One pass before listening: the first request should not pay for lazy initialisation.
    captioner.caption([Image.new("RGB", (224, 224), (128, 128, 128))], beam_size=settings.default_beam_size)
    app = create_app(captioner, settings)
    where = f"http://{args.host}:{args.port}" if ":" not in args.host else f"http://[{args.host}]:{args.port}"
    print(f"captioner: serving {captioner.source} at {where}/ (API docs {where}/docs)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                    limit_concurrency=settings.max_connections, timeout_keep_alive=5)
    except OSError as error:  # e.g. the port is taken
        raise CaptionerError(f"cannot serve on {args.host}:{args.port}: {error}") from None
    return 0
