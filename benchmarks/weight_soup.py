"""Flickr8k dev CIDEr-D of averaged decoder weights ("model soups", Wortsman et al. 2022).

Usage: .venv/bin/python benchmarks/weight_soup.py --base RUN RUN_OR_WEIGHTS [RUN_OR_WEIGHTS ...]

Self-critical runs that start from the same cross-entropy weights end at different points of a
basin; the element-wise mean of their decoders is one decoder of the same size. This scores, with
the validation of ``--base``'s config (its decoding settings, vocabulary and feature cache, as
the training loop validates):

- each ingredient alone;
- the uniform soup (the mean of all ingredients);
- the greedy soup: ingredients in order of their own score, each kept only if the mean with it
  scores higher than without (Wortsman et al.'s recipe; chosen on dev, like a best epoch).

Every ingredient must share the base's vocabulary and decoder shape. Prints one line per
evaluation and writes a JSON result (``--out``); ``--save DIR`` writes the greedy soup as a run
directory (the base's config and vocabulary, the soup's weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from scst_eval import decoder_weights, dev_scores, load_base  # noqa: E402

from captioner.training import checkpoint
from captioner.training.evaluation import run_decode_settings
from captioner.training.soup import greedy_soup

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="run whose config, vocabulary and validation are used")
    parser.add_argument("ingredients", nargs="+", help="run directories or model.safetensors files")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "weight_soup.json")
    parser.add_argument("--save", type=Path, help="write the greedy soup here as a run directory")
    parser.add_argument("--device", default="cpu",
                        help="where to caption (cuda: as the training loop validates on a GPU machine)")
    args = parser.parse_args()
    base, model, data = load_base(args.base, args.threads)
    settings = run_decode_settings(base.config)
    device = torch.device(args.device)
    model.to(device)

    def score(weights: dict[str, torch.Tensor], label: str) -> dict[str, float]:
        model.decoder.load_state_dict(weights)
        corpus, _ = dev_scores(model, base, data, settings, device)
        print(f"{label}\tCIDEr-D {corpus['CIDEr']:.4f}\tBLEU-4 {corpus['BLEU-4']:.4f}", flush=True)
        return corpus

    soup = greedy_soup({spec: decoder_weights(spec, base) for spec in args.ingredients}, score)
    print(f"greedy soup of {len(soup.ingredients)}: CIDEr-D {soup.metrics['CIDEr']:.4f} "
          f"BLEU-4 {soup.metrics['BLEU-4']:.4f} ({', '.join(soup.ingredients)})")

    if args.save is not None:
        model.cpu().load_state_dict(base.weights)  # the base's encoder, so the directory captions photos too
        model.decoder.load_state_dict(soup.weights)
        split = base.config.data.val_split
        checkpoint.save_run(args.save, base.config, base.vocabulary, model,
                            {"split": split, "soup_of": soup.ingredients, "decoding": settings.__dict__, **soup.metrics})
    results = {
        "machine": describe_machine(),
        "command": "benchmarks/weight_soup.py " + " ".join(sys.argv[1:]),
        "images": len(data.val_records),
        "decoding": settings.__dict__,
        "alone": soup.alone,
        "uniform_soup": soup.uniform,
        "greedy_steps": [step.__dict__ for step in soup.steps],
        "greedy_soup": {"ingredients": soup.ingredients, "metrics": soup.metrics},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
