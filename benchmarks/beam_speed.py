"""Batched beam search against decoding one image at a time, same captions.

Usage: .venv/bin/python benchmarks/beam_speed.py [--checkpoint RUN_DIR] [--features CACHE] [--images 500]
                                                [--device cpu|cuda|auto]

Both sides run the same trained decoder on the same region features with beam 3. The batched side
decodes ``--batch-size`` images (x 3 beams) per tensor program; the baseline calls the search once
per image, as per-image beam loops in tutorial implementations do. Captions must be identical.
Region features come from a feature cache (``captioner features``) when given, else from the
checkpoint's encoder run on the shipped example photos repeated (so it runs on a fresh machine).
Both sides decode once before timing (warm-up); on CUDA the clock reads after a synchronize.
``time_batched`` and ``time_single`` are also used by ``benchmarks/gpu_throughput.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.decoding import DecodeSettings, decode
from captioner.encoders.cache import FeatureCache
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]


def load_regions(captioner: Captioner, features: str | None, count: int) -> torch.Tensor:
    if features:
        cache = FeatureCache.open(features)
        rows = [row for row in cache.rows()][:count]
        return torch.stack([cache[row] for row in rows])
    photos = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
    pixels = torch.stack([captioner.model.encoder.preprocess(load_rgb_image(p)) for p in photos]).to(captioner.device)
    with torch.inference_mode():
        regions = captioner.model.encode(pixels)
    repeats = -(-count // len(regions))
    return regions.float().cpu().repeat(repeats, 1, 1)[:count]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batched(decoder, regions: torch.Tensor, tokens, settings: DecodeSettings, batch_size: int):
    """Captions of ``regions`` decoded ``batch_size`` images at a time, and the seconds it took."""
    decode(decoder, regions[:batch_size], tokens, settings)  # warm-up
    _sync(regions.device)
    started = time.perf_counter()
    captions = []
    for start in range(0, len(regions), batch_size):
        captions.extend(decode(decoder, regions[start : start + batch_size], tokens, settings))
    _sync(regions.device)
    return captions, time.perf_counter() - started


def time_single(decoder, regions: torch.Tensor, tokens, settings: DecodeSettings, max_seconds: float | None = None):
    """Captions decoded one image per call, and the seconds it took; stops early (fewer
    captions) once ``max_seconds`` have passed."""
    decode(decoder, regions[:1], tokens, settings)  # warm-up
    _sync(regions.device)
    started = time.perf_counter()
    captions = []
    for i in range(len(regions)):
        captions.append(decode(decoder, regions[i : i + 1], tokens, settings)[0])
        if max_seconds is not None and time.perf_counter() - started > max_seconds:
            break
    _sync(regions.device)
    return captions, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--features", default=None)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device=args.device)
    regions = load_regions(captioner, args.features, args.images).to(captioner.device)
    tokens = search_tokens(captioner.vocabulary)
    settings = DecodeSettings(beam_size=args.beam_size, max_length=captioner.config.data.max_caption_words)
    decoder = captioner.model.decoder

    batched, batched_seconds = time_batched(decoder, regions, tokens, settings, args.batch_size)
    single, single_seconds = time_single(decoder, regions, tokens, settings)

    same = sum(a.token_ids == b.token_ids for a, b in zip(batched, single))
    print(f"images: {len(regions)}, beam {args.beam_size}, batch {args.batch_size}, device {captioner.device}")
    print(f"batched beam:        {batched_seconds:7.2f} s  ({len(regions) / batched_seconds:7.1f} images/s)")
    print(f"one image at a time: {single_seconds:7.2f} s  ({len(regions) / single_seconds:7.1f} images/s)")
    print(f"speed-up: {single_seconds / batched_seconds:.1f}x; identical captions: {same}/{len(regions)}")
    if same != len(regions):
        raise SystemExit("captions differ between batched and per-image search")


if __name__ == "__main__":
    main()
