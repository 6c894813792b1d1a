"""``captioner demo``: the README's main job (see ``captioner.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from captioner.cli._common import print_json


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="caption the example photos, then build scenes, train, evaluate and caption on it",
        description="The main job, offline: caption the example photos with the shipped model and "
        "write their attention figures; then build the built-in scenes dataset, train the small "
        "captioner on it, evaluate it and caption a few test images.",
    )
    parser.add_argument("--out", default="outputs/demo", help="where everything is written (default: outputs/demo)")
    parser.add_argument("--photos", default="examples/photos", help="folder of photos to caption (default: examples/photos)")
    parser.add_argument("--epochs", type=int, help="training epochs on scenes (default: the recipe's)")
    parser.add_argument("--train-size", type=int, default=20000, help="scenes training images (default 20000)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.demo import run_demo

    summary = run_demo(Path(args.out), Path(args.photos), epochs=args.epochs, train_size=args.train_size,
                       progress=not args.quiet)
    if args.json:
        print_json(summary)
        return 0
    photos = summary.get("photos", [])
    if photos:
        print("Example photos (shipped model, beam 3):")
        for entry in photos:
            print(f"  {entry['source']}: {entry.get('caption') or entry.get('error')}")
        print(f"  attention figures in {Path(args.out) / 'photos'}")
    scenes = summary["scenes"]
    print(f"\nScenes: trained {scenes['epochs']} epochs in {scenes['train_minutes']} min -> {scenes['run_dir']}")
    for split, scores in scenes["evaluation"].items():
        print(f"  {split:<11} BLEU-4 {scores['BLEU-4']:.3f}  CIDEr-D {scores['CIDEr']:.3f}  "
              f"grounded precision {scores['grounded_precision']:.3f}  ({scores['images']} images)")
    print("  examples:")
    for example in scenes["examples"]:
        print(f"    {Path(example['image']).name}: {example['caption']}")
    print(f"  attention figure: {scenes['figure']}")
    return 0
