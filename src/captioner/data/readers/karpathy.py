"""Reader for Karpathy's split files (``dataset_coco.json``, ``dataset_flickr8k.json``, ...).

Owns: the ``images[].{filepath, filename, split, sentences[].raw}`` layout and where the image
files live relative to it. ``restval`` images count as ``"train"``, as in the papers that use
these splits. Image ids are COCO's integer ``cocoid`` when present, else the file name.
Must not know about other formats or anything downstream of records.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from captioner.data.readers._common import (
    LoadReport,
    choose_image_folder,
    clean_captions,
    is_file_name,
    is_image_id,
    keep_existing_images,
    normalize_split,
    read_json,
    require,
    sorted_records,
)
from captioner.data.records import CaptionRecord, ImageId
from captioner.errors import DatasetFormatError

def find_karpathy_file(directory: Path) -> Path | None:
    """The ``dataset_*.json`` file in ``directory`` (or its ``annotations/``), if exactly one."""
    for folder in (directory, directory / "annotations"):
        found = sorted(folder.glob("dataset_*.json"))
        if len(found) > 1:
            names = ", ".join(f.name for f in found)
            raise DatasetFormatError(
                f"{folder} has several Karpathy split files ({names}); pass the one to read"
            )
        if found:
            return found[0]
    return None


def _relative_path(entry: dict[str, Any]) -> str:
    filepath = entry.get("filepath") or ""
    return f"{filepath}/{entry['filename']}" if filepath else entry["filename"]


def _image_root_candidates(split_file: Path) -> list[Path]:
    folder = split_file.parent
    root = folder.parent if folder.name == "annotations" else folder
    return [
        root,
        root / "images",
        root / "Flicker8k_Dataset",
        root / "Flickr8k_Dataset",
        root / "flickr30k-images",
        folder,
    ]


def read_karpathy(
    path: str | Path,
    split: str | None = None,
    image_dir: str | Path | None = None,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read a Karpathy split file (or the folder holding one) into records."""
    path = Path(path)
    if path.is_dir():
        found = find_karpathy_file(path)
        require(found is not None, path, "no dataset_*.json here; is this a Karpathy split folder?")
        assert found is not None
        path = found
    data = read_json(path)
    require(
        isinstance(data, dict) and isinstance(data.get("images"), list),
        path,
        'expected a Karpathy split file with an "images" list',
    )
    wanted = normalize_split(split) if split is not None else None

    entries: dict[str, dict[str, Any]] = {}
    captions: list[tuple[str, list[str]]] = []
    for position, entry in enumerate(data["images"]):
        require(
            isinstance(entry, dict)
            and is_file_name(entry.get("filename"))
            and isinstance(entry.get("split"), str)
            and isinstance(entry.get("sentences"), list),
            path,
            f'images[{position}] needs "filename", "split" and "sentences"',
        )
        # Checked here so that a wrong type is reported with its position, not as a TypeError
        # while sorting ids or joining paths later.
        require(
            isinstance(entry.get("filepath") or "", str)
            and ("cocoid" not in entry or is_image_id(entry["cocoid"])),
            path,
            f'images[{position}]: "filepath" must be a string and "cocoid" a number',
        )
        if wanted is not None and normalize_split(entry["split"]) != wanted:
            continue
        for sentence in entry["sentences"]:
            require(
                isinstance(sentence, dict) and isinstance(sentence.get("raw"), str),
                path,
                f'images[{position}].sentences needs "raw" strings',
            )
        key = _relative_path(entry)
        entries[key] = entry
        captions.append((key, [s["raw"] for s in entry["sentences"]]))

    cleaned = clean_captions(captions, path, report)
    root = (
        Path(image_dir)
        if image_dir is not None
        else choose_image_folder(path, _image_root_candidates(path), sorted(entries))
    )
    records = []
    for key, texts in cleaned.items():
        entry = entries[key]
        image_id: ImageId = entry["cocoid"] if "cocoid" in entry else entry["filename"]
        records.append(
            CaptionRecord(
                image_path=root / key,
                captions=texts,
                split=normalize_split(entry["split"]),
                image_id=image_id,
            )
        )
    return sorted_records(keep_existing_images(records, path, report))
