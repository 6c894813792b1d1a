"""Caption scoring speed: ``captioner.metrics`` against pycocoevalcap 1.2, same numbers.

Usage: .venv/bin/python benchmarks/metrics_speed.py [--limit 5000] [--repeat 3]

References: the five Flickr8k captions of the first ``--limit`` train+dev images (from
``<repo>/../shared/datasets/flickr8k``); candidate of image i: a caption of image i+1 (a
realistic, partly matching caption). Both sides do PTB tokenization + BLEU-1..4 + ROUGE-L +
CIDEr-D: ours with ``score_captions(..., meteor=False)`` (pure Python/numpy, best of
``--repeat`` runs), pycocoevalcap with its Java ``PTBTokenizer`` and its ``Bleu``, ``Rouge`` and
``Cider`` scorers (one run: it is the slow side). Every corpus and per-image score must agree to
1e-6, otherwise the script fails. METEOR is left out on both sides (it is the same jar).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from captioner.metrics import score_captions

ROOT = Path(__file__).resolve().parents[1]
FLICKR8K = ROOT / ".." / "shared" / "datasets" / "flickr8k"
TOLERANCE = 1e-6
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr")


def load_references(limit: int) -> dict[str, list[str]]:
    captions: dict[str, list[str]] = defaultdict(list)
    for line in (FLICKR8K / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        key, caption = line.split("\t", 1)
        captions[key.split("#")[0]].append(caption)
    names = []
    for split_file in ("Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt"):
        names += [n for n in (FLICKR8K / split_file).read_text().split() if n in captions]
    return {name: captions[name] for name in names[:limit]}


def pycocoevalcap_scores(references: dict, candidates: dict) -> tuple[dict, dict[str, float]]:
    """Scores and stage times of pycocoevalcap's own pipeline (as ``COCOEvalCap.evaluate``)."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    times: dict[str, float] = {}
    start = time.perf_counter()
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = tokenizer.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
    times["tokenize"] = time.perf_counter() - start
    scores: dict[str, tuple[float, list[float]]] = {}
    start = time.perf_counter()
    bleu, bleu_images = Bleu(4).compute_score(gts, res, verbose=0)
    times["BLEU"] = time.perf_counter() - start
    for k in range(4):
        scores[f"BLEU-{k + 1}"] = (bleu[k], list(bleu_images[k]))
    start = time.perf_counter()
    rouge, rouge_images = Rouge().compute_score(gts, res)
    times["ROUGE-L"] = time.perf_counter() - start
    scores["ROUGE-L"] = (rouge, list(rouge_images))
    start = time.perf_counter()
    cider, cider_images = Cider().compute_score(gts, res)
    times["CIDEr"] = time.perf_counter() - start
    scores["CIDEr"] = (cider, list(cider_images))
    return {"order": list(gts), "scores": scores}, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=5000, help="number of images (max 6997)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours; the best is reported")
    args = parser.parse_args()
    if not (FLICKR8K / "Flickr8k.token.txt").is_file():
        print(f"needs {FLICKR8K}", file=sys.stderr)
        return 2
    if shutil.which("java") is None:
        print("needs java on PATH: pycocoevalcap's tokenizer is Java", file=sys.stderr)
        return 2

    references = load_references(args.limit)
    names = list(references)
    candidates = {name: references[names[(i + 1) % len(names)]][i % 5] for i, name in enumerate(names)}
    print(f"{len(references)} images x {sum(map(len, references.values())) / len(references):.0f} "
          f"references; {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")

    our_times = []
    for _ in range(max(args.repeat, 1)):
        start = time.perf_counter()
        ours = score_captions(references, candidates, metrics=METRICS, meteor=False)
        our_times.append(time.perf_counter() - start)
    reference, stage_times = pycocoevalcap_scores(references, candidates)

    worst = 0.0
    for name in METRICS:
        corpus, per_image = reference["scores"][name]
        mine = [ours.per_image[key][name] for key in reference["order"]]
        per_image_difference = float(np.max(np.abs(np.subtract(mine, per_image))))
        worst = max(worst, abs(ours.corpus[name] - corpus), per_image_difference)
        print(f"  {name:<8} {corpus:.6f}")
    ours_best = min(our_times)
    theirs = sum(stage_times.values())
    print(f"largest difference from pycocoevalcap (corpus and per image): {worst:.1e}")
    print(f"ours: {ours_best:.2f} s (best of {len(our_times)}: "
          f"{', '.join(f'{t:.2f}' for t in our_times)})")
    print(f"pycocoevalcap: {theirs:.2f} s ("
          + ", ".join(f"{stage} {seconds:.2f}" for stage, seconds in stage_times.items()) + ")")
    print(f"speed-up: {theirs / ours_best:.1f}x")
    if worst > TOLERANCE:
        print(f"FAIL: scores differ by {worst:.2e} > {TOLERANCE}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
