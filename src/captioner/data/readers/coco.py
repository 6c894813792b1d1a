"""Reader for COCO captions files (``captions_train2014.json``) and their image folders.

Owns: finding ``captions_*.json`` files in a dataset folder, finding the image folder that goes
with each (``train2014/``, ``images/train2014/``, ``images/<split>/``, ...), and turning the
``images``/``annotations`` lists into records. The split comes from the file name
(``captions_val2014.json`` -> ``"val"``; ``captions_test-novel.json`` -> ``"test-novel"``).
Must not know about other formats or anything downstream of records.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

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

logger = logging.getLogger("captioner.data")

_CAPTIONS_FILE = re.compile(r"^captions_(?P<name>.+?)\.json$")
_YEAR_SUFFIX = re.compile(r"(?<=[a-z])\d{4}$")


def split_of_captions_file(path: Path) -> str:
    """``captions_train2014.json`` -> ``"train"``; a file not named ``captions_*`` is ``"train"``."""
    match = _CAPTIONS_FILE.match(path.name)
    if match is None:
        return "train"
    return normalize_split(_YEAR_SUFFIX.sub("", match.group("name")))


def find_captions_files(directory: Path) -> list[Path]:
    """The ``captions_*.json`` files in ``directory/annotations/`` or ``directory/``."""
    for folder in (directory / "annotations", directory):
        found = sorted(folder.glob("captions_*.json"))
        if found:
            return found
    return []


def _image_folder_candidates(captions_file: Path, split: str) -> list[Path]:
    match = _CAPTIONS_FILE.match(captions_file.name)
    name = match.group("name") if match else captions_file.stem
    folder = captions_file.parent
    root = folder.parent if folder.name == "annotations" else folder
    candidates = [
        root / name,
        root / "images" / name,
        root / "images" / split,
        root / split,
        root / "images",
        folder / name,
        folder / "images",
        root,
    ]
    return candidates


def read_coco_file(
    captions_file: Path,
    image_dir: Path | None = None,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read one COCO captions JSON file into records (images with no file are skipped)."""
    data = read_json(captions_file)
    require(
        isinstance(data, dict)
        and isinstance(data.get("images"), list)
        and isinstance(data.get("annotations"), list),
        captions_file,
        'expected a COCO captions file with "images" and "annotations" lists',
    )
    split = split_of_captions_file(captions_file)

    file_names: dict[ImageId, str] = {}
    for position, image in enumerate(data["images"]):
        require(
            isinstance(image, dict) and is_image_id(image.get("id")) and is_file_name(image.get("file_name")),
            captions_file,
            f'images[{position}] needs "id" (a number or a name) and a non-empty "file_name"',
        )
        file_names[image["id"]] = image["file_name"]

    captions: dict[ImageId, list[str]] = defaultdict(list)
    unknown = 0
    for position, annotation in enumerate(data["annotations"]):
        require(
            isinstance(annotation, dict) and is_image_id(annotation.get("image_id")) and "caption" in annotation,
            captions_file,
            f'annotations[{position}] needs "image_id" (a number or a name) and "caption"',
        )
        if annotation["image_id"] not in file_names:
            unknown += 1
            continue
        captions[annotation["image_id"]].append(annotation["caption"])
    if unknown:
        logger.warning("%s: skipped %d caption(s) of image ids not in its images list",
                       captions_file, unknown)

    keys = {str(image_id): image_id for image_id in file_names}
    cleaned = clean_captions(
        ((str(image_id), captions.get(image_id, [])) for image_id in file_names),
        captions_file,
        report,
    )
    listed = sorted(file_names.values())
    folder = (
        image_dir
        if image_dir is not None
        else choose_image_folder(
            captions_file, _image_folder_candidates(captions_file, split), listed
        )
    )
    records = [
        CaptionRecord(
            image_path=folder / file_names[keys[key]],
            captions=texts,
            split=split,
            image_id=keys[key],
        )
        for key, texts in cleaned.items()
    ]
    return keep_existing_images(records, captions_file, report)


def read_coco(
    path: str | Path,
    split: str | None = None,
    image_dir: str | Path | None = None,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read a COCO captions file, or every ``captions_*.json`` of a dataset folder.

    With ``split``, only the files of that split are parsed (``"dev"`` and ``"val"`` are the same).
    """
    path = Path(path)
    if path.is_dir():
        files = find_captions_files(path)
        require(bool(files), path, "no annotations/captions_*.json here; is this a COCO folder?")
    else:
        files = [path]
    if split is not None:
        wanted = normalize_split(split)
        files = [f for f in files if split_of_captions_file(f) == wanted]
    folder = Path(image_dir) if image_dir is not None else None
    records: list[CaptionRecord] = []
    for captions_file in files:
        records.extend(read_coco_file(captions_file, folder, report))
    return sorted_records(records)
