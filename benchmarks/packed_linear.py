"""oneDNN-packed weights against ``nn.functional.linear`` for the decoder's matrix shapes.

Usage: .venv/bin/python benchmarks/packed_linear.py [--repeat 300]

For each weight shape of the shipped decoder's inference step (hidden 512, vocabulary 2,543,
1,280-d regions) and a range of row counts (3 = one photo's beams, 49 = one photo's regions,
300 = 100 images' beams), times ``captioner.models.packed_linear.linear`` and the plain product
(median of ``--repeat`` calls after warm-up) and prints both with the largest difference of
their outputs. The packed side is timed for every row count and weight, also outside the 2-64
rows and the smallest weight size where ``linear`` uses it, to show where those limits come
from. Where the CPU computes bfloat16 natively, also the bfloat16 path
(``linear(..., precision="bf16")``, what ``--precision bf16`` uses) and its largest difference from
the float32 product. Random weights: only the shapes matter for the time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.models import packed_linear

SHAPES = {
    "hidden maps (query, hidden-to-gates, gate)": (2561, 512),
    "output layer": (2543, 512),
    "hidden-to-embedding": (512, 512),
    "region maps (keys, context terms)": (3072, 1280),
    "initial state": (1024, 1280),
}


def median_us(function, repeat: int) -> float:
    for _ in range(20):
        function()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return 1e6 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    packed_linear._ROWS_RANGE = range(1, 1 << 30)
    packed_linear._MIN_WEIGHT_VALUES = 0
    print(describe_machine())
    bf16 = packed_linear.bfloat16_supported()
    print(f"{'weight':45s} {'rows':>5s} {'plain us':>9s} {'packed us':>10s} {'speed-up':>8s} {'max diff':>9s}"
          + (f" {'bf16 us':>8s} {'speed-up':>8s} {'max diff':>9s}" if bf16 else "  (no native bfloat16 here)"))
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, (outputs, inputs) in SHAPES.items():
            weight = torch.randn(outputs, inputs, generator=generator) / inputs**0.5
            bias = torch.randn(outputs, generator=generator)
            for rows in (1, 3, 9, 49, 300):
                x = torch.randn(rows, inputs, generator=generator)
                plain = median_us(lambda: functional.linear(x, weight, bias), args.repeat)
                packed = median_us(lambda: packed_linear.linear(x, weight, bias), args.repeat)
                exact = functional.linear(x, weight, bias)
                difference = (packed_linear.linear(x, weight, bias) - exact).abs().max()
                line = f"{name:45s} {rows:5d} {plain:9.0f} {packed:10.0f} {plain / packed:7.2f}x {float(difference):9.1e}"
                if bf16:
                    rounded = median_us(lambda: packed_linear.linear(x, weight, bias, precision="bf16"), args.repeat)
                    bf16_difference = (packed_linear.linear(x, weight, bias, precision="bf16") - exact).abs().max()
                    line += f" {rounded:8.0f} {plain / rounded:7.2f}x {float(bf16_difference):9.1e}"
                print(line)


if __name__ == "__main__":
    main()
