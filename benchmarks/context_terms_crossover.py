"""Beam search speed with and without the decoder's precomputed context terms, by batch size.

Usage: .venv/bin/python benchmarks/context_terms_crossover.py [--features work/f8k_lite0_final]
           [--checkpoint RUN_DIR] [--batch-sizes 1,4,16,32,100] [--images 200]

Decodes the first cached Flickr8k images (beam 3, the shipped decoding settings) in batches of
each size, once from the regions ("plain") and once from ``project_regions(...,
with_context_terms=True)`` ("terms"), and prints images/s of each. It is how
``captioner.decoding.types.CONTEXT_TERMS_MAX_IMAGES`` was chosen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.api import Captioner
from captioner.decoding.beam import beam_search
from captioner.training.evaluation import search_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default="work/f8k_lite0_final", help="a `captioner features` cache")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--batch-sizes", default="1,4,16,32,100")
    parser.add_argument("--images", type=int, default=200, help="images per batch size (40 for batch 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    decoder = captioner.model.decoder.eval()
    tokens = search_tokens(captioner.vocabulary)
    settings = captioner.default_settings(3)
    features = np.load(Path(args.features) / "features.npy", mmap_mode="r")
    regions = torch.from_numpy(np.asarray(features[: args.images], dtype=np.float32))
    project = decoder.project_regions
    for mode in ("plain", "terms"):
        decoder.project_regions = lambda r, with_context_terms=False, m=mode: project(r, with_context_terms=m == "terms")
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            count = min(len(regions), args.images if batch > 1 else 40)
            started = time.perf_counter()
            for start in range(0, count, batch):
                beam_search(decoder, regions[start : start + batch], tokens, beam_size=3,
                            max_length=settings.max_length, length_penalty_alpha=settings.length_penalty,
                            no_repeat_ngram_size=settings.no_repeat_ngram_size)
            print(f"{mode:5s} batch {batch:4d}: {count / (time.perf_counter() - started):7.1f} images/s", flush=True)
    decoder.project_regions = project


if __name__ == "__main__":
    main()
