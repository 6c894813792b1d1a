"""Where the shipped ensemble's one-photo beam search got its speed: product kernels, lockstep members.

Usage: .venv/bin/python benchmarks/ensemble_search_speed.py [--checkpoint NAME] [--rounds 4] [--threads 2]

Three parts, on the 2-core CPU:

1. One product of 3 rows (one photo's beams) against the ensemble's stacked hidden-state maps
   (2,561 x 512), weight in cache, median of 2,000 calls, by kernel: float32 and bfloat16 through
   oneDNN's packed weights (``packed_linear``), fbgemm's dynamic int8 with one input range per
   call and with each row on its own range (what ``precision="int8"`` does), oneDNN's int8
   linear with the input quantised in Python, and weight-only int8 (``_weight_int8pack_mm``,
   bfloat16 inputs).
2. The whole search (beam 3, the model's settings, decoder alone) with each product precision
   the package offers, and with weight-only int8 swapped in, alternating in rounds.
3. The same search with the members in lockstep (``DecoderEnsemble.lockstep``, the default) and
   one by one, alternating in rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from caption_latency import latency_regions  # noqa: E402
from packed_linear import median_us  # noqa: E402  (benchmarks/packed_linear.py)

from captioner.api import Captioner
from captioner.decoding import decode
from captioner.models import packed_linear
from captioner.training.evaluation import search_tokens


def product_kernels(weight: torch.Tensor, bias: torch.Tensor) -> None:
    x = torch.randn(3, weight.size(1), generator=torch.Generator().manual_seed(0))
    expected = torch.nn.functional.linear(x, weight, bias)
    scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # quantised tensors are deprecated
        quantized = torch.quantize_per_channel(weight, scales.double(), torch.zeros(weight.size(0), dtype=torch.long),
                                               0, torch.qint8)
    fbgemm = torch.ops.quantized.linear_prepack(quantized, bias)
    int8_weight = quantized.int_repr()
    onednn = torch.ops.onednn.qlinear_prepack(int8_weight, [3, weight.size(1)])
    zero_points = torch.zeros(weight.size(0), dtype=torch.long)

    def onednn_dynamic():
        scale = float(x.abs().max()) / 127
        qx = torch.clamp(torch.round(x / scale) + 128, 0, 255).to(torch.uint8)
        return torch.ops.onednn.qlinear_pointwise(qx, scale, 128, onednn, scales, zero_points, bias, 1.0, 0,
                                                  torch.float32, "none", [], "")

    bf16_x, bf16_scales = x.bfloat16(), scales.bfloat16()
    kernels = {
        "float32, oneDNN packed": lambda: packed_linear.linear(x, weight, bias),
        "bfloat16, oneDNN packed": lambda: packed_linear.linear(x, weight, bias, precision="bf16"),
        "int8 fbgemm, one range per call": lambda: torch.ops.quantized.linear_dynamic(x, fbgemm, True),
        "int8 fbgemm, each row its own range (shipped)": lambda: packed_linear.linear(x, weight, bias, precision="int8"),
        "int8 oneDNN, input quantised in Python": onednn_dynamic,
        "int8 weights only, bfloat16 inputs": lambda: torch._weight_int8pack_mm(bf16_x, int8_weight, bf16_scales),
    }
    print(f"one product, 3 x {weight.size(1)} by {weight.size(0)} x {weight.size(1)}, weight in cache:")
    with torch.inference_mode():
        for name, kernel in kernels.items():
            error = float((kernel().float() + (bias if "weights only" in name else 0) - expected).abs().max())
            print(f"  {name:<48} {median_us(kernel, 2000):7.1f} us  (largest difference from float32 {error:.4f})")


def weight_only_int8() -> Callable:
    """``packed_linear.linear`` with weight-only int8 (bfloat16 inputs) for the products it would pack."""
    plain = packed_linear.linear
    cache: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def linear(x, weight, bias=None, precision="fp32", input_bound=None):
        if x.dim() != 2 or weight.numel() < (1 << 18) or torch.is_grad_enabled():
            return plain(x, weight, bias)
        if id(weight) not in cache:
            scales = weight.abs().amax(dim=1).clamp_min(1e-12) / 127
            cache[id(weight)] = (weight, torch.round(weight / scales[:, None]).to(torch.int8), scales.bfloat16())
        _, int8_weight, scales = cache[id(weight)]
        out = torch._weight_int8pack_mm(x.bfloat16().contiguous(), int8_weight, scales).float()
        return out if bias is None else out + bias

    return linear


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="flickr8k-ensemble")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu", precision="fp32")
    decoder = captioner.model.decoder
    product_kernels(*decoder.members[0]._hidden_maps())

    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    regions = latency_regions(captioner)

    def search_ms(repeat: int = 20) -> tuple[float, str]:
        times = []
        with torch.inference_mode():
            for _ in range(repeat):
                started = time.perf_counter()
                (caption,) = decode(decoder, regions, tokens, settings)
                times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times), " ".join(captioner.vocabulary.decode(caption.token_ids))

    plain_linear = packed_linear.linear
    variants = {"fp32": ("fp32", None), "bf16": ("bf16", None), "int8 weights only, bf16 inputs": ("fp32", weight_only_int8()),
                "int8 (shipped)": ("int8", None)}
    if not packed_linear.bfloat16_supported():
        del variants["bf16"]
    print("one photo's beam search (beam 3, decoder alone), members in lockstep, by product precision:")
    for round_ in range(args.rounds):
        cells = []
        for name, (precision, replacement) in variants.items():
            decoder.product_precision = precision
            packed_linear.linear = replacement or plain_linear
            try:
                search_ms(3)
                ms, caption = search_ms()
            finally:
                packed_linear.linear = plain_linear
            cells.append(f"{name} {ms:.1f} ms")
        print(f"  round {round_ + 1}: " + ", ".join(cells) + f"  ({caption!r})")
    decoder.product_precision = "int8"
    print("the same, int8, members in lockstep or one by one:")
    for round_ in range(args.rounds):
        cells = []
        for lockstep in (True, False):
            decoder.lockstep = lockstep
            search_ms(3)
            ms, caption = search_ms()
            cells.append(f"{'lockstep' if lockstep else 'one by one'} {ms:.1f} ms")
        print(f"  round {round_ + 1}: " + ", ".join(cells) + f"  ({caption!r})")
    decoder.lockstep = True


if __name__ == "__main__":
    main()
