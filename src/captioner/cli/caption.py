"""``captioner caption``: caption image files with a trained or shipped model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioner.cli._common import add_precision_argument, print_json, report_precision


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption",
        help="caption image files",
        description="Caption images. Unreadable files are reported (one line each) and the rest "
        "are still captioned; the exit status is 1 if any file failed.",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--checkpoint", help="run directory or shipped model name (default: the shipped model)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-length", type=int, help="most words per caption")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--attention-dir", help="also write one attention figure per image here")
    parser.add_argument("--json", action="store_true",
                        help="JSON: caption, score, words, the classifier's top-5 ImageNet labels and guided_by per image")
    parser.add_argument("--no-guidance", action="store_true",
                        help="do not make captions name what the encoder's ImageNet classifier sees "
                        "(labels are still reported with --json)")
    parser.add_argument("--with-attention", action="store_true", help="include attention maps in --json")
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.api import Captioner

    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
    report_precision(args.precision, captioner)
    results = captioner.caption(
        args.images, beam_size=args.beam_size, max_length=args.max_length, batch_size=args.batch_size,
        guidance=False if args.no_guidance else None,
    )
    if args.attention_dir:
        from captioner.data.images import load_rgb_image
        from captioner.visualization import plot_attention

        for result in results:
            if result.ok:
                figure = Path(args.attention_dir) / f"{Path(result.source).stem}_attention.png"
                plot_attention(load_rgb_image(result.source), result.words, result.attention, figure, title=result.caption)
    if args.json:
        print_json([r.to_dict(include_attention=args.with_attention) for r in results])
    else:
        for result in results:
            if result.ok:
                print(f"{result.source}\t{result.caption}")
    failed = [r for r in results if not r.ok]
    for result in failed:
        print(f"captioner: skipped {result.error}", file=sys.stderr)
    if args.attention_dir and not args.json:
        print(f"attention figures in {args.attention_dir}", file=sys.stderr)
    return 1 if failed else 0
