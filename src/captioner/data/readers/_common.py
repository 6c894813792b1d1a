"""What every reader shares: split names, file decoding, and the bad-input policy.

Owns: normalizing split names, reading text/JSON files into one-line errors, dropping empty
captions and records whose image file is missing (with a warning), and the deterministic record
order. Must not know about any one dataset format; the readers call these helpers.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from captioner.data.records import CaptionRecord, ImageId
from captioner.errors import DatasetFormatError

logger = logging.getLogger("captioner.data")

# Dataset spellings of the three standard splits; anything else (e.g. "test-novel") is kept.
_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "restval": "train",  # Karpathy: the COCO val images not held out for val/test train too
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",  # Flickr8k
    "test": "test",
}

_EXAMPLES_SHOWN = 3
_PROBE_IMAGES = 20


def normalize_split(name: str) -> str:
    """Return the canonical split name: ``"train"``, ``"val"``, ``"test"`` or ``name`` itself."""
    cleaned = name.strip().lower()
    return _SPLIT_ALIASES.get(cleaned, cleaned)


@dataclass
class LoadReport:
    """What a reader skipped, for ``captioner data stats`` and for tests.

    Readers always log the same facts as warnings; passing a report only lets a caller count them.
    """

    missing_images: list[str] = field(default_factory=list)
    empty_captions: int = 0
    images_without_captions: list[str] = field(default_factory=list)


def read_text(path: Path) -> str:
    """Read a UTF-8 text file, or raise a one-line DatasetFormatError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetFormatError(f"{path} does not exist; check the dataset path") from None
    except OSError as error:
        raise DatasetFormatError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DatasetFormatError(
            f"{path} is not valid UTF-8 (byte {error.start}); re-save it with UTF-8 encoding"
        ) from None


def read_json(path: Path) -> Any:
    """Parse a UTF-8 JSON file, or raise a one-line DatasetFormatError naming it and the spot."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DatasetFormatError(
            f"{path} is not valid JSON (line {error.lineno}, column {error.colno}: {error.msg}); "
            "fix or re-download the file"
        ) from None
    except (ValueError, RecursionError) as error:
        # json raises these, not JSONDecodeError, for integers over 4300 digits and for arrays
        # nested thousands deep: damaged or hostile files, never a real annotation file.
        raise DatasetFormatError(f"{path} is not usable JSON ({_short(error)}); fix or re-download the file") from None


def _short(error: BaseException) -> str:
    text = str(error).split(";")[0]
    return text if len(text) <= 80 else text[:77] + "..."


def shown(text: object) -> str:
    """``text`` as it may appear in a one-line message: control characters (a newline inside a
    file name or a CSV field) escaped, so that an error about it is still one line."""
    text = str(text)
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def is_file_name(value: Any) -> bool:
    """Whether ``value`` can name an image file: a string that is not blank."""
    return isinstance(value, str) and bool(value.strip())


def is_image_id(value: Any) -> bool:
    """Whether ``value`` can be an image id: a number (not a bool, not NaN/inf) or a non-empty string.

    Anything else (null, lists, objects) would break hashing or sorting later, far from the file.
    """
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)  # ids written by tools that store every number as a float
    return isinstance(value, str) and bool(value)


def require(condition: bool, path: Path, problem: str) -> None:
    """Raise ``DatasetFormatError`` with ``problem`` about ``path`` unless ``condition`` holds."""
    if not condition:
        raise DatasetFormatError(f"{path}: {problem}")


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:_EXAMPLES_SHOWN])
    return shown + (", ..." if len(names) > _EXAMPLES_SHOWN else "")


def clean_captions(
    image_captions: Iterable[tuple[str, list[str]]],
    source: Path,
    report: LoadReport | None = None,
) -> dict[str, tuple[str, ...]]:
    """Drop empty captions and then images left without any; warn once about each kind.

    ``image_captions`` yields ``(image_key, captions)``; the result maps each key to its
    non-empty, whitespace-normalized captions in their original order.
    """
    kept: dict[str, tuple[str, ...]] = {}
    empty = 0
    dropped: list[str] = []
    for key, captions in image_captions:
        cleaned = tuple(" ".join(c.split()) for c in captions if isinstance(c, str))
        nonempty = tuple(c for c in cleaned if c)
        empty += len(captions) - len(nonempty)
        if nonempty:
            kept[key] = nonempty
        else:
            dropped.append(key)
    if empty:
        logger.warning("%s: skipped %d empty caption(s)", source, empty)
    if dropped:
        logger.warning(
            "%s: dropped %d image(s) left without captions: %s",
            source,
            len(dropped),
            _examples(dropped),
        )
    if report is not None:
        report.empty_captions += empty
        report.images_without_captions.extend(dropped)
    return kept


class ImageDirectory:
    """Answers "is this image file there?" from one directory listing instead of a stat per file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._listings: dict[Path, frozenset[str]] = {}

    def _listing(self, directory: Path) -> frozenset[str]:
        if directory not in self._listings:
            try:
                with os.scandir(directory) as entries:
                    self._listings[directory] = frozenset(e.name for e in entries)
            except (OSError, ValueError):  # ValueError: a NUL byte in a listed folder name
                self._listings[directory] = frozenset()
        return self._listings[directory]

    def exists(self, relative: str) -> bool:
        path = self.root / relative
        return path.name in self._listing(path.parent)

    def has_any(self) -> bool:
        return bool(self._listing(self.root))


def keep_existing_images(
    records: list[CaptionRecord],
    source: Path,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Drop records whose image file is missing, warning with a count and the first names.

    Raises ``DatasetFormatError`` naming ``source`` when no image at all is found, since that
    almost always means the image folder is in the wrong place rather than a few lost files.
    """
    directories: dict[Path, ImageDirectory] = {}
    present: list[CaptionRecord] = []
    missing: list[str] = []
    for record in records:
        parent = record.image_path.parent
        listing = directories.setdefault(parent, ImageDirectory(parent))
        if listing.exists(record.image_path.name):
            present.append(record)
        else:
            missing.append(str(record.image_path))
    if records and not present:
        folders = ", ".join(sorted({shown(Path(m).parent) for m in missing})[:_EXAMPLES_SHOWN])
        raise DatasetFormatError(
            f"{source}: none of its {len(records)} images exist (looked in {folders}); "
            "put the images there or pass the dataset folder that contains them"
        )
    if missing:
        logger.warning(
            "%s: skipped %d of %d images whose files are missing: %s",
            source,
            len(missing),
            len(records),
            _examples([Path(m).name for m in missing]),
        )
    if report is not None:
        report.missing_images.extend(missing)
    return present


def record_sort_key(record: CaptionRecord) -> tuple[str, int, ImageId]:
    """Deterministic order: by split, then id (ints numerically, names alphabetically)."""
    is_name = isinstance(record.image_id, str)
    return (record.split, int(is_name), record.image_id)


def sorted_records(records: Iterable[CaptionRecord]) -> list[CaptionRecord]:
    return sorted(records, key=record_sort_key)


def choose_image_folder(source: Path, candidates: list[Path], relative_paths: list[str]) -> Path:
    """The first candidate folder holding any of the first listed images.

    Probing a few names (not all) keeps this fast on COCO-sized folders; the per-record check
    happens afterwards in ``keep_existing_images``.
    """
    candidates = list(dict.fromkeys(candidates))
    probe = relative_paths[:_PROBE_IMAGES]
    for candidate in candidates:
        listing = ImageDirectory(candidate)
        if any(listing.exists(name) for name in probe):
            return candidate
    if relative_paths:
        tried = ", ".join(str(c) for c in candidates[:4])
        raise DatasetFormatError(
            f"{source}: cannot find its images (e.g. {shown(relative_paths[0])}) in {tried}; "
            "put them in one of those folders or pass image_dir"
        )
    return candidates[0]
