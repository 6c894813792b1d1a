"""Where one photo's beam search spends its time: the search itself against the decoder's maths.

Usage: .venv/bin/python benchmarks/decode_profile.py [--checkpoint RUN_DIR] [--repeat 20]

Times the shipped model's beam search (beam 3, its decoding settings) on one 224 px photo, then
the same search over the same regions with a decoder 8 units wide (same vocabulary, random
weights, stopped after as many words): what is left there is the search's own cost (indexing,
top-k, bookkeeping). Then splits the real search's time between the decoder's calls and the
search around them, times the attention's energies both ways, and profiles five searches
with the real decoder (torch.profiler, CPU), printing the operators by self time.
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
from caption_latency import latency_regions  # noqa: E402

from captioner.api import Captioner
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


def print_breakdown(decoder, regions: torch.Tensor, tokens, settings: DecodeSettings, repeat: int) -> None:
    """Wall time per search inside the decoder's three calls (timers around them) and outside
    them (the search's own work)."""
    spent = {"project_regions": 0.0, "init_state": 0.0, "step": 0.0}
    steps = 0

    def timed(name, function):
        def call(*args, **kwargs):
            nonlocal steps
            started = time.perf_counter()
            result = function(*args, **kwargs)
            spent[name] += time.perf_counter() - started
            steps += name == "step"
            return result
        return call

    originals = {name: getattr(decoder, name) for name in spent}
    for name, function in originals.items():
        setattr(decoder, name, timed(name, function))
    try:
        with torch.inference_mode():
            for _ in range(2):
                decode(decoder, regions, tokens, settings)
            spent.update({name: 0.0 for name in spent})
            steps = 0
            started = time.perf_counter()
            for _ in range(repeat):
                decode(decoder, regions, tokens, settings)
            total = time.perf_counter() - started
    finally:
        for name in originals:
            delattr(decoder, name)
    per_search = {name: 1000 * seconds / repeat for name, seconds in spent.items()}
    rest = 1000 * total / repeat - sum(per_search.values())
    words = steps / repeat
    print(f"per search (mean of {repeat}): " + ", ".join(f"{n} {ms:.2f} ms" for n, ms in per_search.items())
          + f" ({per_search['step'] / words:.2f} ms per step, {words:.0f} steps), the search's own work "
          f"{rest:.2f} ms ({rest / words:.2f} ms per step), total {1000 * total / repeat:.2f} ms")


def print_attention_energies(attention, repeat: int) -> None:
    """The attention's energies w^T tanh(k + q) + b as autograd computes them against the CPU
    inference form (2 w^T sigmoid(2(k + q)) + (b - sum w), a few images at a time), on one
    photo's 3 beams and on 100 photos' (values: random keys and queries of the model's sizes)."""
    size = attention.region_projection.out_features
    for images in (1, 100):
        keys, query = torch.randn(images, 1, 49, size), torch.randn(images, 3, 1, size)
        timings = {}
        with torch.inference_mode():
            for name, function in [("score(tanh(k + q))", lambda: attention.score(torch.tanh(keys + query))),
                                   ("inference form", lambda: attention._cpu_inference_energies(keys, query))]:
                for _ in range(3):
                    function()
                times = []
                for _ in range(max(5, repeat // images * 5)):
                    started = time.perf_counter()
                    function()
                    times.append(time.perf_counter() - started)
                timings[name] = 1e6 * statistics.median(times)
        print(f"attention energies for ({images}, 3, 49, {size}): "
              + ", ".join(f"{n} {us:.0f} us" for n, us in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    regions = latency_regions(captioner)
    real_ms, words = median_ms(captioner.model.decoder, regions, tokens, settings, args.repeat)
    print(f"beam 3, shipped decoder: {real_ms:.1f} ms for a {words}-word caption")
    torch.manual_seed(0)
    tiny = ShowAttendTellDecoder(DecoderConfig(embed_dim=8, hidden_dim=8, attention_dim=8, dropout=0.0),
                                 len(captioner.vocabulary), regions.size(-1)).eval()
    tiny_ms, tiny_words = median_ms(tiny, regions, tokens, dataclasses.replace(settings, max_length=words), args.repeat)
    print(f"beam 3, the same search with an 8-wide decoder ({tiny_words} words): {tiny_ms:.1f} ms")
    print_breakdown(captioner.model.decoder, regions, tokens, settings, args.repeat)
    decoder = captioner.model.decoder
    # An ensemble's members share the attention's sizes; the first one's stands for them.
    print_attention_energies(getattr(decoder, "attention", None) or decoder.members[0].attention, args.repeat)
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as profiler:
        for _ in range(5):
            decode(captioner.model.decoder, regions, tokens, settings)
    print("five searches with the shipped decoder, by operator:")
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
