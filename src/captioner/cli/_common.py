"""Small helpers shared by subcommands: JSON output and config overrides."""

from __future__ import annotations

import json
import sys
from typing import Any

from captioner.errors import ConfigError


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
