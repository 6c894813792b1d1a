"""Flickr8k dev CIDEr-D of averaged decoder weights ("model soups", Wortsman et al. 2022).

Usage: .venv/bin/python benchmarks/weight_soup.py --base RUN RUN [RUN ...]

Self-critical runs that start from the same cross-entropy weights end at different points of a
basin; the element-wise mean of their decoders is one decoder of the same size. This scores, with
the validation of ``--base``'s config (its decoding settings, vocabulary and feature cache, as
the training loop validates):

- each ingredient alone;
- the uniform soup (the mean of all ingredients);
- the greedy soup: ingredients in order of their own score, each kept only if the mean with it
  scores higher than without (Wortsman et al.'s recipe; chosen on dev, like a best epoch).

Every ingredient must share the base's vocabulary and decoder shape; ``--base`` is one of them.
The soup itself is ``captioner soup`` (``captioner.training.soup.soup_runs``); this script adds
the machine and the command to its result. Prints one line per evaluation and writes a JSON
result (``--out``); ``--save DIR`` writes the greedy soup as a run directory (the base's config,
vocabulary and encoder, the soup's decoder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.training.soup import soup_runs

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the run (one of the ingredients) whose config, vocabulary "
                        "and validation are used")
    parser.add_argument("ingredients", nargs="+", help="run directories")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "weight_soup.json")
    parser.add_argument("--save", type=Path, help="write the greedy soup here as a run directory")
    parser.add_argument("--device", default="cpu",
                        help="where to caption (cuda: as the training loop validates on a GPU machine)")
    args = parser.parse_args()
    others = [run for run in args.ingredients if Path(run) != Path(args.base)]
    if len(others) == len(args.ingredients):
        parser.error("--base must be one of the ingredients")
    torch.set_num_threads(args.threads)
    soup = soup_runs([args.base, *others], out=args.save, device=args.device,
                     report=lambda line: print(line, flush=True))
    print(f"greedy soup of {len(soup.ingredients)}: CIDEr-D {soup.metrics['CIDEr']:.4f} "
          f"BLEU-4 {soup.metrics['BLEU-4']:.4f} ({', '.join(soup.ingredients)})")
    results = {
        "machine": describe_machine(),
        "command": "benchmarks/weight_soup.py " + " ".join(sys.argv[1:]),
        "images": soup.images,
        "decoding": soup.decoding,
        "alone": soup.alone,
        "uniform_soup": soup.uniform,
        "greedy_steps": [step.__dict__ for step in soup.steps],
        "greedy_soup": {"ingredients": soup.ingredients, "metrics": soup.metrics},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
