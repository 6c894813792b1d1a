"""``captioner caption-dir``: caption a folder of photos into a resumable JSONL/CSV file.

A few lines around ``captioner.folder_captioning``, which owns the walking, the results file and
its recovery rules.
"""

from __future__ import annotations

import argparse
import sys

from captioner.cli._common import add_precision_argument, print_json, report_precision

_FAILURES_SHOWN = 20


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "caption-dir",
        help="caption every photo in a folder into a JSONL/CSV file (resumable)",
        description="Caption every image under a folder (recursively; .jpg/.jpeg/.png/.bmp/.gif/"
        ".tif/.tiff/.webp in any case; hidden files and folders skipped), appending one record "
        "per image (path relative to the folder, caption, score) to --out as it goes. Rerun with "
        "the same --out to resume after a crash or Ctrl-C: images already there are skipped. "
        "Unreadable files are recorded with their error, listed at the end, and not retried "
        "unless --retry-errors. Exit status 0 if every image was captioned, 1 if any failed.",
    )
    parser.add_argument("folder", help="folder of photos")
    parser.add_argument("--out", required=True, help="results file (.jsonl or .csv)")
    parser.add_argument("--format", choices=("jsonl", "csv"), help="default: csv for a .csv --out, else jsonl")
    parser.add_argument("--checkpoint", help="run directory or shipped model name (default: the shipped model)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-length", type=int, help="most words per caption")
    parser.add_argument("--no-guidance", action="store_true",
                        help="the decoder alone, without the ImageNet classifier's word (as in captioner caption)")
    parser.add_argument("--retry-errors", action="store_true", help="try again the images recorded as errors")
    parser.add_argument("--workers", type=int, default=1,
                        help="threads decoding the next batches while this one is captioned; 0 = none (default: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    parser.add_argument("--device", default="auto")
    add_precision_argument(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from captioner.api import Captioner
    from captioner.folder_captioning import caption_folder

    def load_captioner() -> Captioner:
        captioner = Captioner.from_pretrained(args.checkpoint, device=args.device, precision=args.precision)
        report_precision(args.precision, captioner)
        return captioner

    summary = caption_folder(
        load_captioner,
        args.folder,
        args.out,
        fmt=args.format,
        batch_size=args.batch_size,
        beam_size=args.beam_size,
        max_length=args.max_length,
        retry_errors=args.retry_errors,
        workers=args.workers,
        progress=not args.no_progress,
        guidance=False if args.no_guidance else None,
    )
    if args.json:
        print_json(summary.to_dict())
    failures = summary.failed + summary.earlier_failures
    rate = f" ({summary.images_per_second:g} images/s)" if summary.images_per_second else ""
    print(
        f"captioned {summary.captioned}, failed {len(summary.failed)}, already done {summary.already_done} "
        f"of {summary.found} images in {summary.folder}{rate}; results in {summary.out}",
        file=sys.stderr,
    )
    if summary.earlier_failures:
        print(f"{len(summary.earlier_failures)} image(s) failed in an earlier run and were not retried "
              "(--retry-errors tries them again)", file=sys.stderr)
    for record in failures[:_FAILURES_SHOWN]:
        print(f"captioner: failed {record.image}: {record.error}", file=sys.stderr)
    if len(failures) > _FAILURES_SHOWN:
        print(f"captioner: ... and {len(failures) - _FAILURES_SHOWN} more failures, all in {summary.out}",
              file=sys.stderr)
    for folder in summary.unreadable_folders:
        print(f"captioner: cannot list folder {folder}", file=sys.stderr)
    return 0 if summary.ok else 1
