"""``captioner data``: build the scenes dataset, describe any dataset (``stats``), and count
where a run's training captions end (``endings``).

A few lines around ``captioner.data``; no data logic lives here.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

VOCABULARY_MIN_COUNT = 5
PERCENTILES = (5, 25, 50, 75, 95)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="build the scenes dataset or describe a dataset",
        description="Build the built-in scenes dataset, or print statistics of any dataset "
        "captioner can read (COCO, Karpathy splits, Flickr8k, a folder with captions.csv/jsonl).",
    )
    commands = parser.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    scenes = commands.add_parser(
        "scenes",
        help="build the synthetic scenes dataset (coloured shapes with checkable captions)",
        description="Draw procedural pictures of 1-4 coloured shapes with 5 true captions each, "
        "in COCO format: OUT/images/<split>/, OUT/annotations/captions_<split>.json and "
        "scenes_<split>.json (ground truth). The same seed gives byte-identical files.",
    )
    scenes.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (new or empty)")
    scenes.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    scenes.add_argument("--train-size", type=int, default=20000, metavar="N", help="default: 20000")
    scenes.add_argument("--val-size", type=int, default=1000, metavar="N", help="default: 1000")
    scenes.add_argument("--test-size", type=int, default=1000, metavar="N", help="default: 1000")
    scenes.add_argument(
        "--novel-size", type=int, default=1000, metavar="N",
        help="images of test-novel, whose colour+shape pairs never occur in train (default: 1000)",
    )
    scenes.add_argument("--image-size", type=int, default=64, metavar="PIXELS", help="default: 64")
    scenes.add_argument("--workers", type=int, default=2, help="drawing processes (default: 2)")
    scenes.add_argument("--no-progress", action="store_true", help="no progress bar")
    scenes.set_defaults(run=run_scenes)

    stats = commands.add_parser(
        "stats",
        help="count images, captions, vocabulary and caption lengths of a dataset",
        description="Read a dataset as training would and print what is in it: images, "
        f"captions, vocabulary size at min count {VOCABULARY_MIN_COUNT}, caption length "
        "percentiles (in tokens) and images skipped because their files are missing.",
    )
    stats.add_argument("path", type=Path, help="dataset folder or annotation file")
    stats.add_argument("--split", help="only this split (train, val/dev, test, ...)")
    stats.add_argument("--format", default="auto", dest="fmt",
                       help="coco, karpathy, flickr8k, folder or auto (default: auto)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    stats.set_defaults(run=run_stats)

    endings = commands.add_parser(
        "endings",
        help="count where a run's training captions end, into its vocab.json",
        description="Count which words and word pairs the training captions (almost) never end "
        "on and store them in RUN_DIR/vocab.json, so that captions of that run do not end there "
        "either ('... playing with a red'; eval.block_dangling_endings). Training counts them "
        "itself since this was added; this is for run directories written before.",
    )
    endings.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run directory (or exported model)")
    endings.add_argument("--data", type=Path, help="dataset of the run (default: its config's data.path)")
    endings.add_argument("--split", help="training split (default: its config's data.train_split)")
    endings.add_argument("--format", dest="fmt", help="dataset format (default: its config's data.format)")
    endings.set_defaults(run=run_endings)


def run_scenes(args: argparse.Namespace) -> int:
    from captioner.data.scenes import build_scenes
    from captioner.errors import ConfigError

    sizes = {
        "train": args.train_size,
        "val": args.val_size,
        "test": args.test_size,
        "test-novel": args.novel_size,
    }
    try:
        out = build_scenes(args.out, seed=args.seed, sizes=sizes, image_size=args.image_size,
                           workers=args.workers, progress=not args.no_progress)
    except ValueError as error:
        raise ConfigError(f"captioner data scenes: {error}") from None
    counts = ", ".join(f"{split} {n}" for split, n in sizes.items() if n)
    print(f"wrote {sum(sizes.values())} images ({counts}) to {out}")
    return 0


def dataset_stats(path: Path, split: str | None = None, fmt: str = "auto") -> dict[str, Any]:
    """What ``captioner data stats`` reports, as a dictionary."""
    import numpy as np

    from captioner.data.readers import LoadReport, detect_format, load_records
    from captioner.data.text import Vocabulary, tokenize_caption

    report = LoadReport()
    records = load_records(path, split=split, fmt=fmt, report=report)
    token_lists = [tokenize_caption(c) for r in records for c in r.captions]
    lengths = np.array([len(t) for t in token_lists])
    vocabulary = Vocabulary.build(token_lists, min_count=VOCABULARY_MIN_COUNT)
    splits: dict[str, dict[str, int]] = {}
    for record in records:
        entry = splits.setdefault(record.split, {"images": 0, "captions": 0})
        entry["images"] += 1
        entry["captions"] += len(record.captions)
    return {
        "path": str(path),
        "format": detect_format(path) if fmt == "auto" else fmt,
        "split": split,
        "images": len(records),
        "captions": int(lengths.size),
        "splits": splits,
        "vocabulary_min_count": VOCABULARY_MIN_COUNT,
        "vocabulary_size": len(vocabulary),
        "caption_tokens": {
            "mean": round(float(lengths.mean()), 2),
            **{f"p{p}": float(np.percentile(lengths, p)) for p in PERCENTILES},
            "max": int(lengths.max()),
        },
        "missing_images": len(report.missing_images),
        "empty_captions_skipped": report.empty_captions,
        "images_without_captions": len(report.images_without_captions),
    }


def run_stats(args: argparse.Namespace) -> int:
    stats = dataset_stats(args.path, split=args.split, fmt=args.fmt)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    lengths = stats["caption_tokens"]
    percentiles = ", ".join(f"p{p} {lengths[f'p{p}']:g}" for p in PERCENTILES)
    print(f"{stats['path']} ({stats['format']}{', split ' + stats['split'] if stats['split'] else ''})")
    print(f"  images:          {stats['images']}")
    print(f"  captions:        {stats['captions']}")
    for name, entry in stats["splits"].items():
        print(f"    {name + ':':<14} {entry['images']} images, {entry['captions']} captions")
    print(f"  vocabulary:      {stats['vocabulary_size']} tokens at min count "
          f"{stats['vocabulary_min_count']} (4 special tokens included)")
    print(f"  caption tokens:  mean {lengths['mean']:g}, {percentiles}, max {lengths['max']}")
    print(f"  missing images:  {stats['missing_images']}")
    if stats["empty_captions_skipped"] or stats["images_without_captions"]:
        print(f"  skipped:         {stats['empty_captions_skipped']} empty captions, "
              f"{stats['images_without_captions']} images without captions")
    return 0


def run_endings(args: argparse.Namespace) -> int:
    from captioner.data.readers import load_records
    from captioner.data.text import CaptionEndings, Vocabulary, tokenize_caption
    from captioner.errors import ConfigError
    from captioner.training import checkpoint
    from captioner.training.config import RunConfig

    config = RunConfig.load(args.run_dir / checkpoint.CONFIG_FILE)
    vocabulary_file = args.run_dir / checkpoint.VOCAB_FILE
    vocabulary = Vocabulary.load(vocabulary_file)
    path = args.data or Path(config.data.path)
    split = args.split or config.data.train_split
    records = load_records(path, split=split, fmt=args.fmt or config.data.format)
    token_lists = [tokenize_caption(c) for r in records for c in r.captions]
    total = sum(len(tokens) for tokens in token_lists)
    if not total:
        raise ConfigError(f"{path} has no captions in split {split!r}; pass the run's training data with --data")
    known = sum(t in vocabulary for tokens in token_lists for t in tokens)
    if known < 0.9 * total:
        raise ConfigError(
            f"only {known / total:.0%} of the words of {path} (split {split}) are in {vocabulary_file}: "
            "not this run's training data; pass it with --data"
        )
    counted = CaptionEndings.count(token_lists, vocabulary.words)
    Vocabulary(vocabulary.words, vocabulary.min_count, counted).save(vocabulary_file)
    print(f"{vocabulary_file}: {len(counted.words)} words and {len(counted.pairs)} word pairs that "
          f"{len(token_lists)} training captions (almost) never end on, {len(counted.allowed_pairs)} "
          "pairs that do end them")
    return 0
