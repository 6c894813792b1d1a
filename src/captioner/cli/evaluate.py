"""``captioner evaluate``: caption a dataset split with a checkpoint and score it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from captioner.cli._common import add_precision_argument, print_json, report_precision

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
    parser.add_argument("--results", help="COCO results JSON to write (default: RUN_DIR/results_<split>_beam<K>.json; "
                        "the working directory for a shipped model)")
    parser.add_argument("--no-meteor", action="store_true", help="skip METEOR even where Java is present")
    parser.add_argument("--no-guidance", action="store_true",
                        help="caption with the decoder alone, without the ImageNet classifier's guidance")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from captioner.api import Captioner
    from captioner.training.evaluation import results_json

    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
    report_precision(args.precision, captioner)
    evaluation = captioner.evaluate(
        args.data, split=args.split, beam_size=args.beam_size, limit=args.limit, batch_size=args.batch_size,
        meteor=False if args.no_meteor else "auto", progress=not args.quiet,
        guidance=False if args.no_guidance else None,
    )
    for line in evaluation.skipped:
        logging.getLogger(__name__).warning("skipped %s", line)
    summary = {name: evaluation.metrics.get(name) for name in METRIC_ORDER}
    if "grounded_precision" in evaluation.metrics:
        summary["grounded_precision"] = evaluation.metrics["grounded_precision"]
    results_path = Path(args.results) if args.results else _default_results_path(captioner.source, args)
    results_path.write_text(json.dumps(results_json(evaluation.predictions), indent=1) + "\n", encoding="utf-8")
    images = len(evaluation.predictions)
    if args.json:
        print_json({"split": args.split, "images": images, "skipped": len(evaluation.skipped),
                    "beam_size": args.beam_size, "guidance": not args.no_guidance, "metrics": summary, "results_file": str(results_path)})
    else:
        print(f"{args.split}: {images} images, beam {args.beam_size}" +
              (f" ({len(evaluation.skipped)} unreadable images skipped)" if evaluation.skipped else ""))
        for name, value in summary.items():
            missing = "skipped (--no-meteor)" if args.no_meteor else "n/a (needs Java and pycocoevalcap)"
            print(f"  {name:<20} {missing if value is None else f'{value:.4f}'}")
        print(f"captions written to {results_path}")
    return 0


def _default_results_path(source: str, args: argparse.Namespace) -> Path:
    """Beside the run's weights; in the working directory for a shipped model (the package's
    folder is no place for user files) or a run directory we may not write to."""
    import os

    from captioner.pretrained import PRETRAINED_DIR

    name = f"results_{args.split}_beam{args.beam_size}.json"
    run_dir = Path(source).resolve()
    if PRETRAINED_DIR in run_dir.parents or not os.access(run_dir, os.W_OK):
        return Path(name)
    return run_dir / name
