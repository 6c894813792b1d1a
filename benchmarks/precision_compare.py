"""fp32 against ``--precision bf16`` or ``int8`` on Flickr8k dev: scores, how many captions change, speed.

Usage: .venv/bin/python benchmarks/precision_compare.py [--checkpoint RUN_DIR] [--against bf16|int8]
       [--beam-size 3] [--threads 2] [--out FILE]

Loads the model twice (``Captioner.from_pretrained(..., precision=...)``), encodes the 1,000 dev
photos of ../shared/datasets/flickr8k with each (50 at a time, as ``flickr8k_eval.py`` does),
and decodes beam 3 with the decoder alone (the model's settings, batches of 100) in four
combinations: features and decoder each in fp32 or bf16. ``int8`` leaves the CNN in fp32, so
there the features are encoded once and decoded in fp32 and int8. Prints corpus BLEU-4 /
ROUGE-L / CIDEr-D, the captions equal to the all-fp32 ones, the features' relative difference,
and the encoding and decoding seconds. Needs a CPU with the kernels (bf16: AVX512-BF16 or AMX;
int8: x86).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from ood_eval import encode_photos  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.decoding import decode
from captioner.metrics.score import score_captions
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = ROOT.parent / "shared" / "datasets" / "flickr8k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--against", choices=("bf16", "int8"), default="bf16")
    parser.add_argument("--beam-size", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    other = args.against
    captioners = {p: Captioner.from_pretrained(args.checkpoint, device="cpu", precision=p) for p in ("fp32", other)}
    if captioners[other].precision != other:
        raise SystemExit(f"this CPU has no kernels for {other}: nothing to compare")
    records = load_records(FLICKR8K, split="val")
    references = {r.image_id: list(r.captions) for r in records}
    regions, report = {}, {"machine": describe_machine(), "images": len(records), "beam_size": args.beam_size}
    for precision, captioner in captioners.items():
        if precision == "int8":
            continue  # its CNN runs in fp32
        started = time.perf_counter()
        regions[precision] = encode_photos(captioner, [r.image_path for r in records])
        report[f"encode_seconds_{precision}"] = round(time.perf_counter() - started, 1)
        print(f"encoded {len(records)} dev photos in {report[f'encode_seconds_{precision}']} s ({precision})", flush=True)
    if other == "bf16":
        exact, rounded = regions["fp32"], regions["bf16"]
        report["feature_mean_relative_difference"] = round(float((rounded - exact).abs().mean() / exact.abs().mean()), 4)
        print(f"features: mean |bf16 - fp32| / mean |fp32| = {report['feature_mean_relative_difference']}")
    settings = captioners["fp32"].default_settings(args.beam_size)
    tokens = search_tokens(captioners["fp32"].vocabulary)
    baseline: dict = {}
    rows = []
    for features in regions:
        for decoder in ("fp32", other):
            captioner = captioners[decoder]
            started = time.perf_counter()
            with torch.inference_mode():
                decoded = [d for start in range(0, len(records), 100)
                           for d in decode(captioner.model.decoder, regions[features][start : start + 100], tokens, settings)]
            seconds = time.perf_counter() - started
            captions = {r.image_id: " ".join(captioner.vocabulary.decode(d.token_ids)) for r, d in zip(records, decoded)}
            baseline = baseline or captions
            scores = score_captions(references, captions, meteor=False).corpus
            row = {"features": features, "decoder": decoder, "decode_seconds": round(seconds, 1),
                   "same_captions_as_fp32": sum(captions[i] == baseline[i] for i in captions),
                   **{name: round(scores[name], 4) for name in ("BLEU-4", "ROUGE-L", "CIDEr")}}
            rows.append(row)
            print(f"features {features}, decoder {decoder}: BLEU-4 {row['BLEU-4']:.4f}  ROUGE-L {row['ROUGE-L']:.4f}  "
                  f"CIDEr-D {row['CIDEr']:.4f}  same captions as fp32 {row['same_captions_as_fp32']}/{len(records)}  "
                  f"decoding {seconds:.1f} s", flush=True)
    report["rows"] = rows
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
