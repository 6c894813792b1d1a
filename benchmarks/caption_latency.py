"""Latency of captioning one 224 px photo end to end, and the share spent outside the CNN.

Usage: .venv/bin/python benchmarks/caption_latency.py [--checkpoint RUN_DIR] [--photo FILE] [--repeat 20] [--precision fp32|bf16|int8]
       [--allow-dangling-endings] [--guided] [--one-by-one]

Each repetition: read and decode the file, preprocess, run the encoder, beam search (beam 3),
turn ids into words; timed in parts with ``time.perf_counter``. Reports medians. The search is
the decoder alone (``captioner caption --no-guidance``) unless ``--guided``: then it also reads
the ImageNet classifier off the regions and runs the search under its constraint, as
``captioner caption`` does by default (counted outside the CNN). ``--one-by-one`` steps an
ensemble's members one after the other instead of in lockstep (``DecoderEnsemble.lockstep``),
as before 2026-11-27.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.decoding import decode
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]


def latency_photo() -> Path:
    """The default photo of the latency benchmarks: an example photo resized to 224 px, as JPEG."""
    photo = Path("/tmp/captioner_latency_224.jpg")
    Image.open(ROOT / "examples" / "photos" / "dog_german_shepherd.jpg").convert("RGB").resize((224, 224)).save(photo, quality=90)
    return photo


def latency_regions(captioner: Captioner) -> torch.Tensor:
    """The latency photo as (1, R, D) region features of ``captioner``'s encoder."""
    with torch.no_grad():
        return captioner.model.encode(captioner.model.encoder.preprocess(load_rgb_image(latency_photo())).unsqueeze(0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--photo", default=None, help="default: examples/photos/dog_german_shepherd.jpg resized to 224 px")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                        help="Captioner precision (default: the model's own, eval.precision)")
    parser.add_argument("--allow-dangling-endings", action="store_true",
                        help="decode without the rule against dangling endings (to time what it costs)")
    parser.add_argument("--one-by-one", action="store_true", help="an ensemble's members step one by one")
    parser.add_argument("--guided", action="store_true",
                        help="time the search with classifier guidance, as captioner caption does by default")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    photo = Path(args.photo) if args.photo else latency_photo()
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu", precision=args.precision)
    if args.one_by_one:
        captioner.model.decoder.lockstep = False
    print(f"precision: {captioner.precision}" + (", guided search" if args.guided else ", decoder alone")
          + (", members one by one" if args.one_by_one else ""))
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(args.beam_size)
    if args.allow_dangling_endings:
        settings = dataclasses.replace(settings, block_dangling_endings=False)
    parts: dict[str, list[float]] = {"load+preprocess": [], "cnn": [], "beam search": [], "total": []}
    caption = ""
    for repetition in range(args.repeat + 2):
        t0 = time.perf_counter()
        pixels = captioner.model.encoder.preprocess(load_rgb_image(photo)).unsqueeze(0)
        t1 = time.perf_counter()
        with torch.inference_mode():
            regions = captioner.model.encode(pixels)
            t2 = time.perf_counter()
            constraints = None
            if args.guided and captioner.guide is not None:
                constraints = [reading.constraint for reading in captioner.guide.read(regions, guide=True)]
            (decoded,) = decode(captioner.model.decoder, regions, tokens, settings, constraints)
        caption = " ".join(captioner.vocabulary.decode(decoded.token_ids))
        t3 = time.perf_counter()
        if repetition >= 2:  # first two are warm-up
            for name, value in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t3 - t0)):
                parts[name].append(value)
    medians = {name: statistics.median(values) * 1000 for name, values in parts.items()}
    print(f"photo: {photo} -> {caption!r}")
    for name, value in medians.items():
        print(f"{name:<16} {value:8.1f} ms (median of {args.repeat})")
    outside = 1 - medians["cnn"] / medians["total"]
    print(f"share outside the CNN forward: {outside:.1%}")


if __name__ == "__main__":
    main()
