"""Images per second of EfficientNet-Lite0 feature extraction on this CPU; writes results/encoders.md.

Usage: .venv/bin/python benchmarks/encoder_speed.py [--images 256] [--batch-size 32] [--threads 2]

Reads the first N Flickr8k images from <repo>/../shared/datasets/flickr8k/images (synthetic noise
images if that folder is absent), decodes and preprocesses them (224 px) in this process, then
runs the encoder in batches, channels-last (as the feature cache does) and in the default NCHW
layout. Reports decode, preprocess, forward and end-to-end rates; the first batch of each forward
run is a warm-up and is not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from captioner.data.images import load_rgb_image
from captioner.encoders import EncoderConfig, build_encoder

ROOT = Path(__file__).resolve().parents[1]
FLICKR_IMAGES = ROOT / ".." / "shared" / "datasets" / "flickr8k" / "images"
RESULTS = ROOT / "benchmarks" / "results" / "encoders.md"


def _images(count: int) -> tuple[list[Image.Image], str]:
    """``count`` decoded photos (decode time is measured separately by the caller)."""
    if FLICKR_IMAGES.is_dir():
        paths = sorted(FLICKR_IMAGES.glob("*.jpg"))[:count]
        if len(paths) == count:
            return [
                load_rgb_image(p) for p in paths
            ], f"first {count} Flickr8k images (224x224 JPEG)"
    rng = np.random.default_rng(0)
    pictures = [
        Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)) for _ in range(count)
    ]
    return pictures, f"{count} synthetic 224x224 noise images (Flickr8k not found)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--layer", default="final")
    parser.add_argument("--no-write", action="store_true", help="print only, do not update results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]

    encoder = build_encoder(EncoderConfig("efficientnet_lite0", layer=args.layer)).eval()

    started = time.perf_counter()
    pictures, source = _images(args.images)
    decode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    tensors = [encoder.preprocess(picture) for picture in pictures]
    preprocess_seconds = time.perf_counter() - started

    batches = [
        torch.stack(tensors[i : i + args.batch_size])
        for i in range(0, len(tensors), args.batch_size)
    ]
    forward_rates = {}
    for memory_format in (torch.channels_last, torch.contiguous_format):
        encoder.to(memory_format=memory_format)
        inputs = [batch.contiguous(memory_format=memory_format) for batch in batches]
        with torch.inference_mode():
            encoder(inputs[0])  # warm-up
            started = time.perf_counter()
            for batch in inputs[1:]:
                features = encoder(batch).to(torch.float16)
            forward_rates[memory_format] = sum(len(b) for b in inputs[1:]) / (
                time.perf_counter() - started
            )
    forwarded = sum(len(batch) for batch in batches[1:])
    forward_rate = forward_rates[torch.channels_last]

    decode_rate = len(pictures) / decode_seconds
    preprocess_rate = len(pictures) / preprocess_seconds
    per_image = 1 / decode_rate + 1 / preprocess_rate + 1 / forward_rate
    command = (
        f".venv/bin/python benchmarks/encoder_speed.py --images {args.images} "
        f"--batch-size {args.batch_size} --threads {args.threads}"
        + (f" --layer {args.layer}" if args.layer != "final" else "")
    )
    lines = [
        "# Encoder speed: EfficientNet-Lite0 feature extraction on CPU",
        "",
        f"Command: `{command}`",
        "",
        f"- machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} torch threads, Python {platform.python_version()}",
        f"- input: {source}; batch {args.batch_size}, 224 px, layer {encoder.config.layer} "
        f"-> features {tuple(features.shape[1:])} float16",
        f"- decode (Pillow, 1 process): {decode_rate:.0f} images/s",
        f"- preprocess (resize + normalise): {preprocess_rate:.0f} images/s",
        f"- encoder forward, channels-last (what `captioner features` uses): **{forward_rate:.1f} images/s** "
        f"({forwarded} images after one warm-up batch)",
        f"- encoder forward, default NCHW layout: {forward_rates[torch.contiguous_format]:.1f} images/s",
        f"- end to end in one process (channels-last): {1 / per_image:.1f} images/s "
        "(`captioner features` decodes in --workers processes, so the forward pass is the limit)",
        "",
        f"The CPU is shared with other jobs (1-minute load average {load_before:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} cores): rough, single-run numbers.",
        "",
    ]
    report = "\n".join(lines)
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(report)
        print(f"written to {RESULTS.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
