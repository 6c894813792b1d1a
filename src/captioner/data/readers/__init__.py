"""Turn a dataset on disk into caption records, whatever its format.

Owns: the list of known formats and telling them apart from a file or folder
(``load_records``). Each format lives in its own module; all return records sorted by split
then image id, with split names normalized (``dev`` -> ``val``, ``restval`` -> ``train``).
Must not know about vocabularies, tensors or models.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from captioner.data.readers._common import LoadReport, normalize_split, read_json, shown
from captioner.data.readers.coco import find_captions_files, read_coco
from captioner.data.readers.flickr8k import TOKEN_FILE, read_flickr8k
from captioner.data.readers.folder import CAPTION_TABLES, find_caption_table, read_folder
from captioner.data.readers.karpathy import find_karpathy_file, read_karpathy
from captioner.data.records import CaptionRecord
from captioner.errors import DatasetFormatError

__all__ = [
    "FORMATS",
    "LoadReport",
    "detect_format",
    "load_records",
    "normalize_split",
    "read_json",
]

FORMATS: dict[str, str] = {
    "coco": "COCO captions: annotations/captions_<split>.json + image folders",
    "karpathy": "Karpathy splits: dataset_coco.json / dataset_flickr8k.json + images",
    "flickr8k": f"Flickr8k: {TOKEN_FILE} + Flickr_8k.*Images.txt + images/",
    "folder": f"your own: images + {' or '.join(CAPTION_TABLES)} (image,caption[,split])",
}


def _formats_help() -> str:
    return "; ".join(f"{name} ({description})" for name, description in FORMATS.items())


def _detect_file(path: Path) -> str | None:
    name = path.name
    if name.endswith(".token.txt"):
        return "flickr8k"
    if name in CAPTION_TABLES or path.suffix in (".csv", ".jsonl"):
        return "folder"
    if path.suffix == ".json":
        if name.startswith("dataset_"):
            return "karpathy"
        if name.startswith("captions_"):
            return "coco"
        return _detect_json_by_content(path)
    return None


def _detect_json_by_content(path: Path) -> str | None:
    data = read_json(path)
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        if isinstance(data.get("annotations"), list):
            return "coco"
        if data["images"] and isinstance(data["images"][0], dict) and "sentences" in data["images"][0]:
            return "karpathy"
    return None


def _detect_directory(path: Path) -> str | None:
    if (path / TOKEN_FILE).is_file():
        return "flickr8k"
    if find_captions_files(path):
        return "coco"
    if find_karpathy_file(path) is not None:
        return "karpathy"
    if find_caption_table(path) is not None:
        return "folder"
    return None


def detect_format(path: str | Path) -> str:
    """Name the format of a dataset file or folder, or raise listing the formats known."""
    path = Path(path)
    if not path.exists():
        raise DatasetFormatError(f"{path} does not exist; check the dataset path")
    found = _detect_directory(path) if path.is_dir() else _detect_file(path)
    if found is None:
        raise DatasetFormatError(
            f"cannot tell the dataset format of {path}; known formats: {_formats_help()}"
        )
    return found


_READERS: dict[str, Callable[..., list[CaptionRecord]]] = {
    "coco": read_coco,
    "karpathy": read_karpathy,
    "flickr8k": read_flickr8k,
    "folder": read_folder,
}


def load_records(
    path: str | Path,
    split: str | None = None,
    fmt: str = "auto",
    *,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read every image and its captions from a dataset file or folder.

    ``split`` selects one split (``"val"`` and ``"dev"`` are the same); ``fmt`` is ``"auto"`` or
    one of ``FORMATS``. Missing images and empty captions are skipped with a warning (and counted
    in ``report`` when given). Raises ``DatasetFormatError`` with a one-line reason otherwise.
    """
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    elif fmt not in _READERS:
        raise DatasetFormatError(
            f"unknown dataset format {fmt!r} for {path}; known formats: {_formats_help()}"
        )
    elif not path.exists():
        raise DatasetFormatError(f"{path} does not exist; check the dataset path")
    records = _READERS[fmt](path, split=split, report=report)
    if split is not None and not records:
        everything = _READERS[fmt](path, split=None)
        present = sorted({shown(r.split) for r in everything})
        raise DatasetFormatError(
            f"{path} has no images in split {normalize_split(split)!r} "
            f"(splits present: {', '.join(present) or 'none'}); choose one of those"
        )
    if not records:
        raise DatasetFormatError(f"{path} lists no captioned images; check the captions file")
    return records
