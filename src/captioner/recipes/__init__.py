"""Training recipes that ship with the package: one JSON RunConfig per reproducible run.

``captioner train --config NAME`` accepts a recipe's name (``scenes_small_cnn``,
``flickr8k_lite0``) as well as a path; the repository's ``configs/`` folder points here.
"""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parent


def recipe_path(name_or_path: str) -> Path:
    """A recipe name or a JSON file path -> the file to load."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.exists():
        return path
    return RECIPES_DIR / f"{name_or_path}.json"


def available_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.json"))
