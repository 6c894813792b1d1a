"""Small helpers shared by subcommands: JSON output, config overrides, the precision option."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from captioner.errors import ConfigError

if TYPE_CHECKING:
    from captioner.api import Captioner


def print_json(values: Any) -> None:
    json.dump(values, sys.stdout, indent=2, ensure_ascii=False, default=str)
    sys.stdout.write("\n")


def apply_overrides(values: dict[str, Any], assignments: list[str]) -> None:
    """Apply ``section.field=value`` strings (value parsed as JSON when it can be) in place."""
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.field=value, got {assignment!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = values
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise ConfigError(f"--set {key}: {parent!r} is not a section")
        target[leaf] = value


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
