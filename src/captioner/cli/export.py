"""``captioner export``: a smaller copy of a run's best model, ready to ship or serve."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a compact copy of a run directory (fp16, frozen encoder left to its source)",
        description="Copy a run's best weights (fp16 by default), config, vocabulary and metrics to a "
        "new directory. A frozen pretrained encoder is left out: it loads from its own pretrained "
        "source at full precision.",
    )
    parser.add_argument("--checkpoint", required=True, help="run directory to export")
    parser.add_argument("--out", required=True, help="directory to write")
    parser.add_argument("--fp32", action="store_true", help="keep float32 weights")
    parser.add_argument("--int8", action="store_true",
                        help="store the large matrices as int8 with an fp16 scale per 64 weights (about half "
                        "the size of fp16; loads back as float32)")
    parser.add_argument("--include-encoder", action="store_true", help="also store a frozen encoder's weights")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from captioner.training.checkpoint import export_run

    out = export_run(Path(args.checkpoint), Path(args.out), dtype=None if args.fp32 else torch.float16,
                     include_frozen_encoder=args.include_encoder, int8=args.int8)
    size = (out / "model.safetensors").stat().st_size / 1e6
    print(f"exported {args.checkpoint} -> {out} ({size:.1f} MB of weights)")
    return 0
