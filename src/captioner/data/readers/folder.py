"""Reader for "my own pictures": a folder of images plus a ``captions.csv`` or ``captions.jsonl``.

Owns: the two small table formats. ``captions.csv`` has a header with ``image`` and ``caption``
columns and an optional ``split`` column; ``captions.jsonl`` has one object per line with the same
keys (``"captions": [...]`` may replace ``"caption"``). Several rows may name the same image.
``image`` is a path relative to the folder and is also the image id. Rows without a split are
``"train"``. Must not know about other formats or anything downstream of records.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from captioner.data.readers._common import (
    LoadReport,
    clean_captions,
    keep_existing_images,
    normalize_split,
    read_text,
    require,
    shown,
    sorted_records,
)
from captioner.data.records import CaptionRecord
from captioner.errors import DatasetFormatError

CAPTION_TABLES = ("captions.csv", "captions.jsonl")
DEFAULT_SPLIT = "train"


def find_caption_table(directory: Path) -> Path | None:
    found = [directory / name for name in CAPTION_TABLES if (directory / name).is_file()]
    if len(found) > 1:
        raise DatasetFormatError(
            f"{directory} has both captions.csv and captions.jsonl; keep one of them"
        )
    return found[0] if found else None


Row = tuple[str, str | list[str], str]  # image, caption(s), split


def _read_csv_rows(path: Path) -> list[Row]:
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    columns = set(reader.fieldnames or [])
    require(
        {"image", "caption"} <= columns,
        path,
        f"the header must name columns image,caption[,split] (found: {shown(', '.join(sorted(columns))) or 'none'})",
    )
    rows: list[Row] = []
    try:
        for row in reader:
            line = reader.line_num
            require(
                row.get("image") is not None and row.get("caption") is not None,
                path,
                f"line {line} has fewer columns than the header; quote captions that contain commas",
            )
            rows.append((row["image"].strip(), row["caption"], (row.get("split") or "").strip()))
    except csv.Error as error:
        raise DatasetFormatError(f"{path} line {reader.line_num}: {error}; fix the CSV quoting") from None
    return rows


def _read_jsonl_rows(path: Path) -> list[Row]:
    rows: list[Row] = []
    for line_number, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item: Any = json.loads(line)
        except json.JSONDecodeError as error:
            raise DatasetFormatError(
                f"{path} line {line_number}: not valid JSON ({error.msg}); fix that line"
            ) from None
        except (ValueError, RecursionError):  # 4300+ digit integers, arrays nested thousands deep
            raise DatasetFormatError(
                f"{path} line {line_number}: not usable JSON (too large or too deeply nested); fix that line"
            ) from None
        captions = item.get("captions", item.get("caption")) if isinstance(item, dict) else None
        require(
            isinstance(item, dict)
            and isinstance(item.get("image"), str)
            and (isinstance(captions, str) or (isinstance(captions, list) and all(isinstance(c, str) for c in captions))),
            path,
            f'line {line_number}: expected {{"image": "...", "caption": "...", "split": "..."}}',
        )
        split = item.get("split") or ""
        require(isinstance(split, str), path, f'line {line_number}: "split" must be a string')
        rows.append((item["image"].strip(), captions, split.strip()))
    return rows


def read_folder(
    path: str | Path,
    split: str | None = None,
    report: LoadReport | None = None,
) -> list[CaptionRecord]:
    """Read a captions table (or the folder holding one) and the images it names."""
    path = Path(path)
    if path.is_dir():
        table = find_caption_table(path)
        require(table is not None, path, "no captions.csv or captions.jsonl here")
        assert table is not None
    else:
        table = path
    root = table.parent
    rows = _read_jsonl_rows(table) if table.suffix == ".jsonl" else _read_csv_rows(table)

    captions: dict[str, list[str]] = defaultdict(list)
    split_of: dict[str, str] = {}
    for image, caption, row_split in rows:
        require(bool(image), table, "a row has an empty image name; fill it in or remove the row")
        normalized = normalize_split(row_split) if row_split else DEFAULT_SPLIT
        previous = split_of.setdefault(image, normalized)
        if previous != normalized:
            raise DatasetFormatError(
                f"{table}: image {shown(image)} is in two splits ({shown(previous)}, {shown(normalized)}); "
                "give each image one split"
            )
        captions[image].extend([caption] if isinstance(caption, str) else caption)

    wanted = normalize_split(split) if split is not None else None
    selected = sorted(name for name in captions if wanted is None or split_of[name] == wanted)
    cleaned = clean_captions(((name, captions[name]) for name in selected), table, report)
    records = [
        CaptionRecord(image_path=root / name, captions=texts, split=split_of[name], image_id=name)
        for name, texts in cleaned.items()
    ]
    return sorted_records(keep_existing_images(records, table, report))
