"""Would int8 weights help the CPU latency? The decoder's matrix products with int8 weights.

Usage: .venv/bin/python benchmarks/int8_decoder_probe.py [--checkpoint RUN_DIR] [--rounds 4]

The probe that led to ``precision="int8"`` (``packed_linear``), which quantises each input row
on its own range instead of one range per call as here. Every matrix product of the decoder's search runs through
``captioner.models.packed_linear.linear`` (the stacked hidden-state, region, context and
initial-state maps, hidden-to-embedding and the output layer); the probe swaps that function for
dynamic int8 quantisation: weights quantised per output channel to int8 once, activations per
call (``torch.ops.quantized.linear_dynamic``, the fbgemm kernel behind the deprecated
``torch.ao.quantization.quantize_dynamic``). The attention's score vector and the word-gate
table stay fp32. Measures one 224 px photo's beam search (beam 3, the model's settings),
alternating fp32 and int8 in rounds because this VM's cores are noisy, and Flickr8k dev CIDEr-D
of both (1,000 photos encoded from the JPEGs, decoder alone, beam 3).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from caption_latency import latency_regions  # noqa: E402
from ood_eval import encode_photos  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.decoding import decode
from captioner.metrics import score_captions
from captioner.models import packed_linear
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    # fp32 explicitly: the shipped ensemble's own precision is int8 (per-row, what this probe led to).
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu", precision="fp32")
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    decoder = captioner.model.decoder
    modes = {"fp32": contextlib.nullcontext, "int8 weights": int8_products}
    one = latency_regions(captioner)

    def median_ms(mode, repeat: int = 10) -> float:
        times = []
        with torch.inference_mode(), mode():
            for _ in range(repeat):
                started = time.perf_counter()
                decode(decoder, one, tokens, settings)
                times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    for mode in modes.values():
        median_ms(mode, 3)  # warm-up
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}: one photo's beam search " + ", ".join(
            f"{name} {median_ms(mode):.1f} ms" for name, mode in modes.items()))

    records = load_records(args.data, split="val")
    regions = encode_photos(captioner, [r.image_path for r in records])
    references = {r.image_id: list(r.captions) for r in records}
    for name, mode in modes.items():
        captions = []
        with torch.inference_mode(), mode():
            for start in range(0, len(records), 100):
                captions += [" ".join(captioner.vocabulary.decode(d.token_ids))
                             for d in decode(decoder, regions[start : start + 100], tokens, settings)]
        scores = score_captions(references, {r.image_id: c for r, c in zip(records, captions)}, meteor=False).corpus
        print(f"Flickr8k dev, beam 3, decoder alone, {name}: CIDEr-D {scores['CIDEr']:.4f}  BLEU-4 {scores['BLEU-4']:.4f}")


@contextlib.contextmanager
def int8_products():
    """``packed_linear.linear`` with int8 weights inside this block (inference only)."""
    packed: dict[tuple[int, int], object] = {}
    plain = packed_linear.linear

    def linear(
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        precision: str = "fp32",
        input_bound: float | None = None,
    ) -> torch.Tensor:
        # int8 replaces whatever precision the decoder asked for (it runs fp32 in this probe).
        key = (id(weight), id(bias))
        if key not in packed:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # quantized tensors are deprecated: a probe
                scales = (weight.abs().amax(dim=1).clamp_min(1e-8) / 127).double()
                zeros = torch.zeros(weight.size(0), dtype=torch.long)
                quantized = torch.quantize_per_channel(weight.float(), scales, zeros, 0, torch.qint8)
                packed[key] = (weight, bias, torch.ops.quantized.linear_prepack(quantized, bias))
        return torch.ops.quantized.linear_dynamic(x.contiguous(), packed[key][2], True)

    packed_linear.linear = linear
    try:
        yield
    finally:
        packed_linear.linear = plain


if __name__ == "__main__":
    main()
