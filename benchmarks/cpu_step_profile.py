"""Where a teacher-forcing training step of the Flickr8k decoder spends its time on this CPU.

    .venv/bin/python benchmarks/cpu_step_profile.py                  # fp32, one thread
    .venv/bin/python benchmarks/cpu_step_profile.py --bf16           # under bfloat16 autocast
    .venv/bin/python benchmarks/cpu_step_profile.py --threads 2
    .venv/bin/python benchmarks/cpu_step_profile.py --region-dim 512 --captions-per-image 5

The step is the shipped recipes' (decoder 512/512/512 with deep output, 7 x 7 x 1,280 regions,
the Flickr8k vocabulary's 2,543 words, batch 96, captions with Flickr8k's lengths when
../shared has them), on random regions: the arithmetic of a real step, without the data.
Prints the step time, the plain matrix products' throughput at the decoder's shapes, and from
``torch.profiler``: the step's matrix-product FLOPs, the share of its time they take, and the
rate they run at. A step whose products run near the plain products' rate is bound by them:
only fewer FLOPs (or faster arithmetic, such as native bfloat16) make it faster.

``--region-dim N`` gives the decoder a learned N-d embedding of the regions
(``decoder.region_dim``); ``--captions-per-image K`` lays the batch out as
``data.group_captions`` does: batch // K images, each with K captions, its regions once.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from _machine import describe_machine
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder

VOCABULARY = 2543
BATCH = 96
REGIONS, FEATURES = 49, 1280
MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")
CAPTIONS = Path(__file__).resolve().parents[2] / "shared/datasets/flickr8k/Flickr8k.token.txt"


def caption_lengths() -> list[int]:
    if CAPTIONS.exists():
        return [min(20, len(line.split("\t")[1].split())) for line in CAPTIONS.read_text().splitlines() if "\t" in line]
    print(f"{CAPTIONS} not found: caption lengths 8-16 words, uniform")
    return list(range(8, 17))


def plain_matmul_gflops(shapes: list[tuple[int, int, int]], repeats: int = 10) -> dict[str, float]:
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        rates[f"{m}x{k}x{n}"] = 2 * m * k * n * repeats / (time.perf_counter() - start) / 1e9
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bf16", action="store_true", help="run the step under bfloat16 autocast")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--region-dim", type=int, default=0, help="decoder.region_dim (0: the 1,280-d grid as it is)")
    parser.add_argument("--attention-dim", type=int, default=512)
    parser.add_argument("--captions-per-image", type=int, default=1,
                        help="K > 1: batch // K images with K captions each (data.group_captions)")
    parser.add_argument("--no-profile", action="store_true", help="time the step only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    random.seed(0)
    print(describe_machine())

    lengths = caption_lengths()
    config = DecoderConfig(512, 512, args.attention_dim, 0.5, True, region_dim=args.region_dim)
    decoder = ShowAttendTellDecoder(config, VOCABULARY, FEATURES)
    per_image = args.captions_per_image
    captions_per_batch = BATCH // per_image * per_image
    optimizer = torch.optim.Adam(decoder.parameters(), 5e-4)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        # Grouped batches keep an image's captions together, so they are not sorted by length.
        words = [random.choice(lengths) for _ in range(captions_per_batch)]
        if per_image == 1:
            words.sort(reverse=True)
        captions = torch.zeros(captions_per_batch, max(words) + 2, dtype=torch.long)
        for row, count in enumerate(words):
            captions[row, : count + 2] = torch.randint(4, VOCABULARY, (count + 2,))
        return torch.randn(captions_per_batch // per_image, REGIONS, FEATURES).relu(), captions

    def step(regions: torch.Tensor, captions: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            targets = captions[:, 1:]
            out = decoder(regions, captions, lengths=(targets != 0).sum(1))
            loss = torch.nn.functional.cross_entropy(out.word_logits.float(), targets[out.rows, out.steps])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    batches = [batch() for _ in range(args.steps + 2)]
    for regions, captions in batches[:2]:
        step(regions, captions)
    start = time.perf_counter()
    for regions, captions in batches[2:]:
        step(regions, captions)
    seconds = (time.perf_counter() - start) / args.steps
    words = sum(int((captions[:, 1:] != 0).sum()) for _, captions in batches[2:]) / args.steps
    steps_per_epoch = -(-30_000 // captions_per_batch)  # Flickr8k's 6,000 training photos x 5 captions
    print(f"{'bf16 autocast' if args.bf16 else 'fp32'}, {args.threads} thread(s), region_dim {args.region_dim}, "
          f"attention {args.attention_dim}, {captions_per_batch} captions of {captions_per_batch // per_image} images: "
          f"{seconds * 1000:.0f} ms a step ({words:.0f} words), {steps_per_epoch * seconds:.0f} s for an epoch's "
          f"{steps_per_epoch} steps")
    if args.no_profile:
        return

    shapes = [(96, 1792, 2048), (96, 512, 2048), (96, 512, VOCABULARY), (96 * REGIONS, FEATURES, 512), (2048, 96, 1792)]
    for shape, rate in plain_matmul_gflops(shapes).items():
        print(f"  plain fp32 product {shape}: {rate:.1f} GFLOPS")

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as profiler:
        for regions, captions in batches[2:5]:
            step(regions, captions)
    events = profiler.key_averages()
    total_us = sum(event.self_cpu_time_total for event in events)
    products = [event for event in events if event.key in MATRIX_PRODUCTS]
    product_us = sum(event.self_cpu_time_total for event in products)
    product_flops = sum(event.flops for event in products)
    print(f"profiled 3 steps: matrix products {product_flops / 3 / 1e9:.1f} GFLOP a step, "
          f"{product_us / total_us:.0%} of the step's time, at {product_flops / product_us / 1e3:.1f} GFLOPS")
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]:
        print(f"  {event.key:<40} {event.self_cpu_time_total / total_us:6.1%}  {event.count // 3:>6} calls a step")


if __name__ == "__main__":
    main()
