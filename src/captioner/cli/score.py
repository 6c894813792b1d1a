"""``captioner score``: COCO caption metrics of a results file against reference captions.

References are a COCO captions annotation file (``{"images": [...], "annotations":
[{"image_id", "caption"}, ...]}``) or any dataset ``captioner.data.readers.load_records`` reads
(choose its split with ``--split``); results are a COCO results file (``[{"image_id",
"caption"}, ...]``, one caption per image). Reading and checking the files is done here; the
scoring is ``captioner.metrics.score_captions``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

from captioner.data.readers import read_json
from captioner.errors import DatasetFormatError

_METRICS_HELP = "BLEU-1..4, METEOR (needs Java), ROUGE-L, CIDEr (CIDEr-D)"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help=f"score a COCO results file against reference captions ({_METRICS_HELP})",
        description="Score candidate captions exactly as the COCO caption evaluation "
        "(pycocoevalcap 1.2) does, without Java except for METEOR. SPICE is not provided.",
    )
    parser.add_argument(
        "--references", required=True, metavar="REFS",
        help="COCO captions annotation JSON, or a dataset file/folder (see --split)",
    )
    parser.add_argument(
        "--results", required=True, metavar="RESULTS",
        help='COCO results JSON: [{"image_id": ..., "caption": "..."}, ...]',
    )
    parser.add_argument(
        "--split", default=None,
        help="split of a dataset given as --references (ignored for a COCO annotation file)",
    )
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    parser.add_argument("--per-image", metavar="OUT.jsonl", help="write one JSON line per image")
    parser.add_argument(
        "--no-meteor", action="store_true", help="skip METEOR even where Java is present"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.metrics import METRIC_NAMES, score_captions
    from captioner.metrics.meteor import meteor_unavailable_reason

    references = read_references(Path(args.references), args.split)
    candidates = read_results(Path(args.results))
    _check_ids(references, candidates, args.references, args.results)
    scores = score_captions(references, candidates, meteor=False if args.no_meteor else "auto")

    if args.per_image:
        with open(args.per_image, "w", encoding="utf-8") as out:
            for image_id, values in scores.per_image.items():
                line = {"image_id": image_id, "caption": candidates[image_id], **values}
                out.write(json.dumps(line, ensure_ascii=False) + "\n")
    if args.json:
        json.dump({name: scores.corpus[name] for name in METRIC_NAMES}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{len(scores.per_image)} images scored")
        print(scores.table())
    if scores.corpus["METEOR"] is None and not args.no_meteor:
        reason = meteor_unavailable_reason() or "the METEOR run failed (see the warning above)"
        print(f"METEOR n/a: {reason}", file=sys.stderr)
    return 0


def read_references(path: Path, split: str | None = None) -> dict[Hashable, list[str]]:
    """``{image_id: [caption, ...]}`` from a COCO annotation file or a dataset."""
    if path.is_file() and path.suffix == ".json":
        data = read_json(path)
        if isinstance(data, dict) and "annotations" in data:
            return _coco_references(path, data)
        if not _looks_like_karpathy(data):
            raise DatasetFormatError(
                f"{path} is not a COCO captions file: expected an object with an "
                '"annotations" list of {"image_id", "caption"}'
            )
    from captioner.data.readers import load_records

    records = load_records(path, split=split)
    return {record.image_id: list(record.captions) for record in records}


def _looks_like_karpathy(data: Any) -> bool:
    images = data.get("images") if isinstance(data, dict) else None
    return bool(images) and isinstance(images[0], dict) and "sentences" in images[0]


def read_results(path: Path) -> dict[Hashable, str]:
    """``{image_id: caption}`` from a COCO results file, rejecting duplicate image ids."""
    data = read_json(path)
    if not isinstance(data, list):
        raise DatasetFormatError(
            f'{path} is not a COCO results file: expected a list of {{"image_id", "caption"}}'
        )
    candidates: dict[Hashable, str] = {}
    for index, entry in enumerate(data):
        image_id, caption = _image_and_caption(path, index, entry, "result")
        if image_id in candidates:
            raise DatasetFormatError(
                f"{path} has more than one result for image {image_id!r}; "
                "keep exactly one caption per image"
            )
        candidates[image_id] = caption
    return candidates


def _coco_references(path: Path, data: dict[str, Any]) -> dict[Hashable, list[str]]:
    annotations = data["annotations"]
    if not isinstance(annotations, list):
        raise DatasetFormatError(f'{path}: "annotations" must be a list of {{"image_id", "caption"}}')
    images = data.get("images", [])
    if not isinstance(images, list):
        raise DatasetFormatError(f'{path}: "images" must be a list of {{"id", ...}}')
    # pycocoevalcap scores images in the order of the "images" list.
    references: dict[Hashable, list[str]] = {}
    for image in images:
        if isinstance(image, dict) and _is_id(image.get("id")):
            references[image["id"]] = []
    for index, entry in enumerate(annotations):
        image_id, caption = _image_and_caption(path, index, entry, "annotation")
        references.setdefault(image_id, []).append(caption)
    return {image_id: captions for image_id, captions in references.items() if captions}


def _image_and_caption(path: Path, index: int, entry: Any, kind: str) -> tuple[Hashable, str]:
    if not isinstance(entry, dict) or "image_id" not in entry or "caption" not in entry:
        raise DatasetFormatError(
            f'{path}: {kind} #{index} is not an object with "image_id" and "caption"'
        )
    image_id, caption = entry["image_id"], entry["caption"]
    if not _is_id(image_id):
        raise DatasetFormatError(
            f"{path}: {kind} #{index} has image_id {image_id!r}; use a number or a string"
        )
    if not isinstance(caption, str):
        raise DatasetFormatError(f"{path}: {kind} #{index} has a caption that is not text")
    return image_id, caption


def _is_id(value: Any) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _check_ids(
    references: dict[Hashable, list[str]], candidates: dict[Hashable, str], refs: str, results: str
) -> None:
    missing = [image_id for image_id in candidates if image_id not in references]
    if not missing:
        return
    first = missing[0]
    hint = ""
    as_text = {str(image_id): image_id for image_id in references}
    if str(first) in as_text:
        hint = f" (ids are compared with their JSON types: {first!r} vs {as_text[str(first)]!r})"
    raise DatasetFormatError(
        f"{len(missing)} image id(s) in {results} have no captions in {refs}, "
        f"first {first!r}{hint}; score results against the references they were made for"
    )
