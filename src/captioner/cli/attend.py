"""``captioner attend``: caption photos and draw where the model looked for every word."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attend",
        help="draw attention figures (one panel per word)",
        description="Caption photos and draw the Show, Attend and Tell figure of each: the photo, "
        "then one panel per generated word lit where the model looked for it, the caption as "
        "title. One photo: --out is the figure file (.png, .pdf, .svg or .jpg) or a folder; "
        "several photos: --out is a folder and each gets <name>_attention.png. Unreadable files "
        "are reported (one line each) and the rest still drawn; the exit status is 1 if any failed.",
    )
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="figure file (one photo) or folder")
    parser.add_argument("--checkpoint", help="run directory or shipped model name (default: the shipped model)")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--max-length", type=int, help="most words per caption")
    parser.add_argument("--no-guidance", action="store_true",
                        help="the decoder alone, without the ImageNet classifier's word (as in captioner caption)")
    parser.add_argument("--device", default="auto")
    parser.set_defaults(run=run)


def figure_targets(images: list[str], out: str) -> list[Path]:
    """Where each photo's figure goes: ``out`` itself for one photo and a figure suffix, else
    one ``<stem>_attention.png`` per photo inside the folder ``out``."""
    from captioner.errors import ConfigError
    from captioner.visualization import FIGURE_SUFFIXES, figure_path

    out_path = Path(out)
    names_a_file = out_path.suffix.lower() in FIGURE_SUFFIXES and not out_path.is_dir()
    if names_a_file:
        if len(images) > 1:
            raise ConfigError(f"--out {out} names one figure file but {len(images)} photos were given; "
                              "pass a folder to get one figure per photo")
        return [out_path]
    if out_path.exists() and not out_path.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; pass a folder or a .png/.pdf/.svg file name")
    taken: set[Path] = set()
    return [figure_path(out_path, image, taken) for image in images]


def run(args: argparse.Namespace) -> int:
    targets = figure_targets(args.images, args.out)  # before loading the model: fail fast

    from captioner.api import Captioner
    from captioner.errors import BadImageError
    from captioner.visualization import plot_result

    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device)
    results = captioner.caption(args.images, beam_size=args.beam_size, max_length=args.max_length, batch_size=8,
                                guidance=False if args.no_guidance else None)
    failed = 0
    for result, target in zip(results, targets):
        if result.ok:
            try:
                figure = plot_result(result, target)
            except BadImageError as error:  # the file changed between captioning and drawing
                result.error = str(error)
            else:
                print(f"{result.source}\t{result.caption}\t{figure}")
                continue
        failed += 1
        print(f"captioner: skipped {result.error}", file=sys.stderr)
    return 1 if failed else 0
