"""Small helpers shared by subcommands: JSON output, the precision option, SIGTERM as Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from captioner.api import Captioner


def print_json(values: Any) -> None:
    json.dump(values, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, ``timeout``, a job scheduler before it kills) stops
    the work as Ctrl-C does: training saves its state, so that ``--resume`` goes on from there,
    and a recipe's side-by-side stages are stopped with it rather than left running."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: signals are not ours to handle
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "int8"), default=None,
        help="fp32: exact; bf16: the CNN and the decoder's large products in bfloat16 where the CPU "
        "(AVX512-BF16, AMX) or GPU computes it natively; int8: the decoder's large products with int8 "
        "weights on an x86 CPU. The last two are faster; captions may differ from fp32's on near ties "
        "(default: the model's own, eval.precision: int8 for the shipped default model, else fp32)",
    )


_NEEDS = {
    "bf16": "native bfloat16 (a CPU with AVX512-BF16 or AMX, or a GPU that has it)",
    "int8": "fbgemm's int8 kernels (PyTorch on an x86 CPU)",
}


def report_precision(requested: str | None, captioner: Captioner) -> None:
    """One line on stderr where the model could not run in the precision asked for on the
    command line. A model's own precision (``eval.precision``) falls back to fp32 silently: the
    exact path, and the user asked for nothing."""
    if requested is not None and captioner.precision != requested:
        print(f"captioner: --precision {requested} needs {_NEEDS[requested]}; {captioner.device} has none, "
              f"running in {captioner.precision}", file=sys.stderr)
