"""Where one photo's beam search spends its time: the search itself against the decoder's maths.

Usage: .venv/bin/python benchmarks/decode_profile.py [--checkpoint RUN_DIR] [--repeat 20]

Times the shipped model's beam search (beam 3, its decoding settings) on one 224 px photo, then
the same search over the same regions with a decoder 8 units wide (same vocabulary, random
weights, stopped after as many words): what is left there is the search's own cost (indexing,
top-k, bookkeeping). Then profiles five searches with the real decoder (torch.profiler, CPU) and
prints the operators by self time.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from caption_latency import latency_photo  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.decoding import DecodeSettings, decode
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.training.evaluation import search_tokens


def median_ms(decoder: torch.nn.Module, regions: torch.Tensor, tokens, settings: DecodeSettings, repeat: int):
    times, words = [], 0
    with torch.inference_mode():
        for repetition in range(repeat + 2):
            started = time.perf_counter()
            (caption,) = decode(decoder, regions, tokens, settings)
            if repetition >= 2:  # warm-up
                times.append(time.perf_counter() - started)
            words = len(caption.token_ids)
    return 1000 * statistics.median(times), words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    photo = latency_photo()
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    with torch.inference_mode():
        regions = captioner.model.encode(captioner.model.encoder.preprocess(load_rgb_image(photo)).unsqueeze(0))
    real_ms, words = median_ms(captioner.model.decoder, regions, tokens, settings, args.repeat)
    print(f"beam 3, shipped decoder: {real_ms:.1f} ms for a {words}-word caption")
    torch.manual_seed(0)
    tiny = ShowAttendTellDecoder(DecoderConfig(embed_dim=8, hidden_dim=8, attention_dim=8, dropout=0.0),
                                 len(captioner.vocabulary), regions.size(-1)).eval()
    tiny_ms, tiny_words = median_ms(tiny, regions, tokens, dataclasses.replace(settings, max_length=words), args.repeat)
    print(f"beam 3, the same search with an 8-wide decoder ({tiny_words} words): {tiny_ms:.1f} ms")
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(5):
            decode(captioner.model.decoder, regions, tokens, settings)
    print("five searches with the shipped decoder, by operator:")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
