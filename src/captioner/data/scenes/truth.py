"""The world of the scenes dataset: its colours, shapes, sizes, grid and relations, and the
ground truth of one picture.

Owns: the fixed vocabulary of things a scene can contain, ``SceneObject``/``SceneTruth``, the
exact meaning of every relation and position word (the generator only writes what these
definitions make true; the checker scores with the same definitions), and reading/writing
``scenes_<split>.json``. Must not know about drawing, files of images, tensors or models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.data.readers._common import read_json, require
from captioner.errors import DatasetFormatError

# Clearly distinct RGB values on the mid-grey background (every pair differs by >= 100 in some
# channel, and each differs from the background by at least 90 in some channel).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (255, 130, 0),
    "yellow": (250, 235, 40),
    "green": (30, 170, 50),
    "blue": (30, 80, 240),
    "purple": (150, 30, 220),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
}
BACKGROUND: tuple[int, int, int] = (128, 128, 128)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")
PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "cross": "crosses",
}
SIZES: tuple[str, ...] = ("small", "large")
GRID = 3
MAX_OBJECTS = 4

RELATIONS: tuple[str, ...] = ("left_of", "right_of", "above", "below", "next_to")
RELATION_PHRASES: dict[str, str] = {
    "left_of": "to the left of",
    "right_of": "to the right of",
    "above": "above",
    "below": "below",
    "next_to": "next to",
}


@dataclass(frozen=True, order=True)
class SceneObject:
    """One drawn object; ``row`` 0 is the top of the 3x3 grid, ``col`` 0 its left."""

    row: int
    col: int
    shape: str
    colour: str
    size: str

    def to_dict(self) -> dict[str, Any]:
        return {"shape": self.shape, "colour": self.colour, "size": self.size,
                "row": self.row, "col": self.col}


def relation_holds(a: SceneObject, relation: str, b: SceneObject) -> bool:
    """What each relation means, by grid cells (two objects never share a cell).

    ``left_of``/``right_of`` compare columns and ``above``/``below`` compare rows, whatever the
    other coordinate; ``next_to`` means the cells touch, diagonally included.
    """
    if a == b:
        return False
    if relation == "left_of":
        return a.col < b.col
    if relation == "right_of":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    if relation == "next_to":
        return max(abs(a.row - b.row), abs(a.col - b.col)) == 1
    raise ValueError(f"unknown relation {relation!r}; known: {', '.join(RELATIONS)}")


# Position words: top/bottom fix the row, left/right the column; center/middle alone is the
# middle cell. "corner" adds nothing (the other words already say which).
POSITION_WORDS = frozenset({"top", "bottom", "left", "right", "center", "centre", "middle", "corner"})


def position_holds(obj: SceneObject, words: frozenset[str]) -> bool:
    """Whether ``obj``'s cell matches position words such as {"top", "left"} or {"center"}."""
    rows = {"top": 0, "bottom": GRID - 1}
    cols = {"left": 0, "right": GRID - 1}
    constrained = False
    for word, row in rows.items():
        if word in words:
            constrained = True
            if obj.row != row:
                return False
    for word, col in cols.items():
        if word in words:
            constrained = True
            if obj.col != col:
                return False
    if not constrained and words & {"center", "centre", "middle"}:
        return obj.row == GRID // 2 and obj.col == GRID // 2
    return True


@dataclass(frozen=True)
class SceneTruth:
    """Everything true about one picture: its objects (sorted by cell)."""

    image_id: int
    objects: tuple[SceneObject, ...]
    file_name: str = ""

    def relations(self) -> list[tuple[int, str, int]]:
        """Every true ``(i, relation, j)`` between objects, by index in ``objects``."""
        return [
            (i, relation, j)
            for i, a in enumerate(self.objects)
            for j, b in enumerate(self.objects)
            for relation in RELATIONS
            if i != j and relation_holds(a, relation, b)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "file_name": self.file_name,
            "objects": [o.to_dict() for o in self.objects],
            "relations": [list(r) for r in self.relations()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SceneTruth:
        objects = tuple(
            SceneObject(row=int(o["row"]), col=int(o["col"]), shape=o["shape"],
                        colour=o["colour"], size=o["size"])
            for o in data["objects"]
        )
        for o in objects:
            if o.shape not in SHAPES or o.colour not in COLOURS or o.size not in SIZES:
                raise ValueError(f"unknown shape/colour/size in {o}")
        return cls(image_id=int(data["image_id"]), objects=objects,
                   file_name=str(data.get("file_name", "")))


def scenes_file(dataset_dir: str | Path, split: str) -> Path:
    return Path(dataset_dir) / "annotations" / f"scenes_{split}.json"


def find_scene_truths(data: str | Path, split: str) -> dict[int, SceneTruth] | None:
    """The ground truth of ``split`` if ``data`` (a scenes folder or one of its captions files)
    is a scenes dataset; ``None`` for any other dataset, which has nothing to check against."""
    from captioner.data.readers._common import normalize_split

    path = Path(data)
    if path.is_file():
        folder = path.parent
        root = folder.parent if folder.name == "annotations" else folder
    else:
        root = path
    for name in dict.fromkeys([normalize_split(split), split]):
        candidate = scenes_file(root, name)
        if candidate.is_file():
            return load_scene_truths(candidate)
    return None


def load_scene_truths(path: str | Path, split: str | None = None) -> dict[int, SceneTruth]:
    """Ground truth by image id, from ``scenes_<split>.json`` or a scenes folder plus ``split``."""
    path = Path(path)
    if path.is_dir():
        if split is None:
            raise DatasetFormatError(f"{path} is a folder; say which split's ground truth to load")
        path = scenes_file(path, split)
    data = read_json(path)
    require(isinstance(data, dict) and isinstance(data.get("scenes"), list), path,
            'expected a scenes ground-truth file with a "scenes" list; rebuild it with '
            "`captioner data scenes`")
    truths: dict[int, SceneTruth] = {}
    for position, entry in enumerate(data["scenes"]):
        try:
            truth = SceneTruth.from_dict(entry)
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetFormatError(
                f"{path}: scenes[{position}] is malformed ({error}); rebuild it with "
                "`captioner data scenes`"
            ) from None
        truths[truth.image_id] = truth
    return truths
