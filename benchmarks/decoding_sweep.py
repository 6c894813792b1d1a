"""Flickr8k dev CIDEr-D of decoder weights over beam sizes and length penalties.

Usage: .venv/bin/python benchmarks/decoding_sweep.py --base RUN RUN_OR_WEIGHTS [RUN_OR_WEIGHTS ...]

A model's gain is fairest when each side is decoded at its own best setting: self-critical
training shortens captions, and the length penalty that suits a cross-entropy model may not
suit it. Every weights file is decoded with ``--beams`` x ``--length-penalties`` (trigram
blocking and the rule against dangling endings as in ``--base``'s config), scored on all of the
base's dev images, and the grid goes to a JSON result (``--out``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from scst_eval import decoder_weights, dev_scores, load_base  # noqa: E402

from captioner.training.evaluation import run_decode_settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="run whose config, vocabulary and dev images are used")
    parser.add_argument("weights", nargs="+", help='"base", run directories or model.safetensors files')
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 3, 5])
    parser.add_argument("--length-penalties", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5, 2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decoding_sweep.json")
    args = parser.parse_args()
    base, model, data = load_base(args.base, args.threads)
    shipped = run_decode_settings(base.config)
    results = {"machine": describe_machine(), "command": "benchmarks/decoding_sweep.py " + " ".join(sys.argv[1:]),
               "images": len(data.val_records), "weights": {}}
    for spec in args.weights:
        model.decoder.load_state_dict(decoder_weights(spec, base))
        rows = []
        for beam_size in args.beams:
            # Beam 1 ignores the length penalty: one setting is enough.
            for length_penalty in args.length_penalties if beam_size > 1 else [shipped.length_penalty]:
                settings = dataclasses.replace(shipped, beam_size=beam_size, length_penalty=length_penalty)
                corpus, words = dev_scores(model, base, data, settings)
                rows.append({"beam_size": beam_size, "length_penalty": length_penalty, "CIDEr": corpus["CIDEr"],
                             "BLEU-4": corpus["BLEU-4"], "mean_words": round(words, 2)})
                print(f"{spec}\tbeam {beam_size}\tlength penalty {length_penalty}\tCIDEr-D {corpus['CIDEr']:.4f}\t"
                      f"BLEU-4 {corpus['BLEU-4']:.4f}\t{words:.1f} words", flush=True)
        best = max(rows, key=lambda row: row["CIDEr"])
        print(f"{spec}\tbest: beam {best['beam_size']}, length penalty {best['length_penalty']}, "
              f"CIDEr-D {best['CIDEr']:.4f}", flush=True)
        results["weights"][spec] = {"grid": rows, "best": best}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
