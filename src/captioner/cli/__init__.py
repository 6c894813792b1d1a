"""The ``captioner`` command: argument parsing and error reporting, nothing else.

Each subcommand lives in its own module in this package and exposes
``register(subparsers) -> None``; the parser it adds sets ``run=callable(args) -> int``.
Modules keep heavy imports (torch, models) inside their ``run`` so ``captioner --help`` is quick.
Model logic never lives here: a subcommand is a few lines calling the library.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from captioner import __version__
from captioner.errors import CaptionerError

# Order is the order of `captioner --help`.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "demo",
    "caption",
    "caption_dir",  # registers "caption-dir"
    "attend",
    "data",
    "features",
    "train",
    "evaluate",
    "score",
    "soup",
    "ensemble",
    "export",
    "serve",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="captioner",
        description="Train, evaluate and run image captioners (Show, Attend and Tell).",
    )
    parser.add_argument("--version", action="version", version=f"captioner {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"captioner.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args) or 0)
    except CaptionerError as error:
        if args.debug:
            raise
        print(f"captioner: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("captioner: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
