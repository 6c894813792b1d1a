"""Would an int8 decoder help the CPU latency? Dynamic int8 quantisation of the decoder's Linear layers.

Usage: .venv/bin/python benchmarks/int8_decoder_probe.py [--checkpoint RUN_DIR] [--rounds 4]

A probe, not a feature: ``torch.ao.quantization.quantize_dynamic`` (deprecated in favour of
torchao) replaces every ``nn.Linear`` of the decoder with an int8-weight version (the LSTM cell
stays fp32: the decoding fast path reads its weights directly). Measures one 224 px photo's beam
search (beam 3, the model's settings), alternating fp32 and int8 in rounds because this VM's
cores are noisy, and Flickr8k dev CIDEr-D of both (1,000 photos encoded from the JPEGs, decoder
alone, beam 3).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from caption_latency import latency_photo  # noqa: E402
from ood_eval import encode_photos  # noqa: E402

from captioner.api import Captioner
from captioner.data.images import load_rgb_image
from captioner.data.readers import load_records
from captioner.decoding import decode
from captioner.metrics import score_captions
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
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    fp32 = captioner.model.decoder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    decoders = {"fp32": fp32, "int8 Linear": int8}

    photo = latency_photo()
    with torch.inference_mode():
        one = captioner.model.encode(captioner.model.encoder.preprocess(load_rgb_image(photo)).unsqueeze(0))

    def median_ms(decoder: torch.nn.Module, repeat: int = 10) -> float:
        times = []
        with torch.inference_mode():
            for _ in range(repeat):
                started = time.perf_counter()
                decode(decoder, one, tokens, settings)
                times.append(time.perf_counter() - started)
        return 1000 * statistics.median(times)

    for decoder in decoders.values():
        median_ms(decoder, 3)  # warm-up
    for round_ in range(args.rounds):
        print(f"round {round_ + 1}: one photo's beam search " + ", ".join(
            f"{name} {median_ms(decoder):.1f} ms" for name, decoder in decoders.items()))

    records = load_records(args.data, split="val")
    regions = encode_photos(captioner, [r.image_path for r in records])
    references = {r.image_id: list(r.captions) for r in records}
    for name, decoder in decoders.items():
        captions = []
        with torch.inference_mode():
            for start in range(0, len(records), 100):
                captions += [" ".join(captioner.vocabulary.decode(d.token_ids))
                             for d in decode(decoder, regions[start : start + 100], tokens, settings)]
        scores = score_captions(references, {r.image_id: c for r, c in zip(records, captions)}, meteor=False).corpus
        print(f"Flickr8k dev, beam 3, decoder alone, {name}: CIDEr-D {scores['CIDEr']:.4f}  BLEU-4 {scores['BLEU-4']:.4f}")


if __name__ == "__main__":
    main()
