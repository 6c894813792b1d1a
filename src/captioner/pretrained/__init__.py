"""Models that ship inside the package, so that captioning works offline right after install.

Each subfolder is a complete run directory (``model.safetensors``, ``config.json``,
``vocab.json``, ``metrics.json``, ``README.md`` with its data and licence), or an ensemble of
such directories (``ensemble.json``).
"""

from __future__ import annotations

from pathlib import Path

from captioner.errors import CheckpointError

PRETRAINED_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL = "flickr8k-ensemble"


def available_models() -> list[str]:
    return sorted(
        p.name for p in PRETRAINED_DIR.iterdir()
        if (p / "model.safetensors").is_file() or (p / "ensemble.json").is_file()
    )


def resolve_pretrained(name_or_path: str | Path | None) -> Path:
    """A shipped model's name, or a run directory, to the directory that holds it."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    path = Path(name_or_path)
    if path.is_dir():
        return path
    if isinstance(name_or_path, str) and (PRETRAINED_DIR / name_or_path).is_dir():
        return PRETRAINED_DIR / name_or_path
    known = ", ".join(available_models()) or "none shipped in this build"
    raise CheckpointError(
        f"{name_or_path} is neither a run directory nor a shipped model (shipped: {known}); "
        "pass --checkpoint RUN_DIR from `captioner train`"
    )
