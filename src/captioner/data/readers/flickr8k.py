"""Reader for Flickr8k in its own distribution format.

Owns: ``Flickr8k.token.txt`` (``NAME.jpg#N<TAB>caption``), the split lists
``Flickr_8k.{train,dev,test}Images.txt`` and the image folder (``images/`` or the original
``Flicker8k_Dataset/``). Only images named in a split list are read; ``dev`` is ``"val"``.
Image ids are the file names. Must not know about other formats or anything downstream of records.
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
    keep_existing_images,
    normalize_split,
    read_text,
    require,
    sorted_records,
)
from captioner.data.records import CaptionRecord
from captioner.errors import DatasetFormatError

logger = logging.getLogger("captioner.data")

TOKEN_FILE = "Flickr8k.token.txt"
SPLIT_FILES = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
IMAGE_FOLDERS = ("images", "Flicker8k_Dataset", "Flickr8k_Dataset")

_TOKEN_LINE = re.compile(r"^(?P<name>[^\t#]+)#(?P<number>\d+)\t(?P<caption>.*)$")


def read_token_file(path: Path) -> dict[str, list[str]]:
    """Parse ``NAME#N<TAB>caption`` lines into captions per image name, ordered by ``N``."""
    numbered: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        match = _TOKEN_LINE.match(line)
        if match is None:
            shown = line if len(line) <= 60 else line[:57] + "..."
            raise DatasetFormatError(
                f"{path} line {line_number}: expected 'NAME.jpg#N<TAB>caption', got {shown!r}; "
                "fix or remove that line"
            )
        numbered[match["name"].strip()].append((int(match["number"]), match["caption"]))
    return {name: [text for _, text in sorted(pairs)] for name, pairs in numbered.items()}


def read_split_list(path: Path) -> list[str]:
    return [line.strip() for line in read_text(path).splitlines() if line.strip()]


def read_flickr8k(
    path: str | Path,
    split: str | None = None,
    image_dir: str | Path | None = None,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read a Flickr8k folder (or its ``Flickr8k.token.txt``) into records."""
    path = Path(path)
    root = path.parent if path.is_file() else path
    token_file = path if path.is_file() else root / TOKEN_FILE
    require(token_file.is_file(), root, f"no {TOKEN_FILE} here; is this a Flickr8k folder?")

    present_lists = {name: root / f for name, f in SPLIT_FILES.items() if (root / f).is_file()}
    if not present_lists:
        raise DatasetFormatError(
            f"{root}: none of the split lists {', '.join(SPLIT_FILES.values())} is here; "
            "put them next to the token file"
        )
    wanted = normalize_split(split) if split is not None else None
    if wanted is not None:
        require(
            wanted in present_lists,
            root,
            f"no split list for split {split!r} (have: {', '.join(present_lists)})",
        )
        present_lists = {wanted: present_lists[wanted]}

    split_of: dict[str, str] = {}
    for split_name, list_file in present_lists.items():
        for name in read_split_list(list_file):
            split_of.setdefault(name, split_name)

    captions = read_token_file(token_file)
    unlisted = sum(1 for name in captions if name not in split_of)
    if unlisted and wanted is None:
        logger.info("%s: %d captioned image(s) are in no split list; ignored", token_file, unlisted)

    listed = sorted(split_of)
    cleaned = clean_captions(((name, captions.get(name, [])) for name in listed), token_file, report)
    if image_dir is not None:
        folder = Path(image_dir)
    else:
        folder = choose_image_folder(
            token_file, [root / f for f in IMAGE_FOLDERS] + [root], sorted(cleaned)
        )
    records = [
        CaptionRecord(image_path=folder / name, captions=texts, split=split_of[name], image_id=name)
        for name, texts in cleaned.items()
    ]
    return sorted_records(keep_existing_images(records, token_file, report))
