"""Small helpers shared by subcommands: JSON output and the precision option."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from captioner.api import Captioner


def print_json(values: Any) -> None:
    json.dump(values, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=("fp32", "bf16"), default="fp32",
        help="bf16: the CNN and the decoder's large products in bfloat16 where the CPU (AVX512-BF16, "
        "AMX) or GPU computes it natively; faster, captions may differ from fp32's on near ties "
        "(default: fp32)",
    )


def report_precision(requested: str, captioner: Captioner) -> None:
    """One line on stderr where the model could not run in the precision asked for."""
    if captioner.precision != requested:
        print(f"captioner: --precision {requested} needs native bfloat16 (a CPU with AVX512-BF16 or AMX, "
              f"or a GPU that has it); {captioner.device} has none, running in {captioner.precision}",
              file=sys.stderr)
