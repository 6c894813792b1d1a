"""``captioner evaluate``: caption a dataset split with a checkpoint and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.cli._common import print_json

METRIC_ORDER = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="caption a dataset split and score it (BLEU, METEOR, ROUGE-L, CIDEr-D)",
        description="Caption every image of a split, write the captions as a COCO results file "
        "and print the COCO caption metrics (and grounded precision on the scenes dataset).",
    )
    parser.add_argument("--checkpoint", help="run directory or shipped model name (default: the shipped model)")
    parser.add_argument("--data", required=True, help="dataset directory or annotation file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="only the first N images")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--results", help="COCO results JSON to write (default: RUN_DIR/results_<split>_beam<K>.json)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR even where Java is present")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.api import Captioner
    from captioner.data.readers import load_records
    from captioner.training.evaluation import caption_records, results_json, score_predictions
    from captioner.training.inputs import InputKind, PixelInput

    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device)
    records = load_records(args.data, split=args.split)
    if args.limit:
        records = records[: args.limit]
    records = _readable(records)
    predictions = caption_records(
        captioner.model, records, PixelInput(captioner.model.encoder.preprocess), InputKind.PIXELS,
        captioner.vocabulary, captioner.default_settings(args.beam_size), captioner.device,
        batch_size=args.batch_size, progress=not args.quiet,
    )
    scores = score_predictions(predictions, meteor=False if args.no_meteor else "auto")
    summary: dict = {name: scores.corpus.get(name) for name in METRIC_ORDER}
    grounded = _grounded_precision(args.data, args.split, predictions)
    if grounded is not None:
        summary["grounded_precision"] = grounded
    results_path = Path(args.results) if args.results else Path(captioner.source) / f"results_{args.split}_beam{args.beam_size}.json"
    if not args.results and not _writable(results_path.parent):
        results_path = Path(f"results_{args.split}_beam{args.beam_size}.json")
    results_path.write_text(json.dumps(results_json(predictions), indent=1) + "\n", encoding="utf-8")
    if args.json:
        print_json({"split": args.split, "images": len(predictions), "beam_size": args.beam_size,
                    "metrics": summary, "results_file": str(results_path)})
    else:
        print(f"{args.split}: {len(predictions)} images, beam {args.beam_size}")
        for name, value in summary.items():
            print(f"  {name:<20} {'n/a (needs Java and pycocoevalcap)' if value is None else f'{value:.4f}'}")
        print(f"captions written to {results_path}")
    return 0


def _readable(records):
    """Drop (and report) records whose image cannot be opened, so one bad file costs one image."""
    import logging

    from captioner.data.images import load_rgb_image
    from captioner.errors import BadImageError

    kept = []
    for record in records:
        try:
            load_rgb_image(record.image_path)
        except BadImageError as error:
            logging.getLogger(__name__).warning("skipped %s", error)
            continue
        kept.append(record)
    return kept


def _writable(directory: Path) -> bool:
    import os

    return directory.is_dir() and os.access(directory, os.W_OK)


def _grounded_precision(data: str, split: str, predictions) -> float | None:
    """Scenes datasets carry their ground truth; other datasets have none to check against."""
    from captioner.data.scenes.checker import corpus_grounded_precision
    from captioner.data.scenes.truth import find_scene_truths

    truths = find_scene_truths(data, split)
    if truths is None:
        return None
    return corpus_grounded_precision({p.record.image_id: p.caption for p in predictions}, truths)
