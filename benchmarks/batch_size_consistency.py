"""Does a photo's caption depend on how many photos share its batch? fp32, int8, and int8 decoded as fp32 is.

Usage: .venv/bin/python benchmarks/batch_size_consistency.py [--checkpoint NAME] [--images 200]

Encodes the first N Flickr8k dev photos once, then decodes them (beam 3, the model's settings,
decoder alone) in batches of 8 and of 100 and counts the captions that differ, with the largest
log-probability gap among the equal ones: in fp32; in int8 as shipped (the precomputed context
terms at every batch size); and in int8 with fp32's rule (the terms only up to
``CONTEXT_TERMS_MAX_IMAGES`` photos), the first version, kept here to show why it was changed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from ood_eval import encode_photos  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.decoding import decode, types
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="flickr8k-ensemble")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    records = load_records(args.data, split="val")[: args.images]
    captioners = {p: Captioner.from_pretrained(args.checkpoint, device="cpu", precision=p) for p in ("fp32", "int8")}
    regions = encode_photos(captioners["fp32"], [r.image_path for r in records])  # int8 leaves the CNN in fp32
    fp32_rule = lambda images, decoder=None: images <= types.CONTEXT_TERMS_MAX_IMAGES  # noqa: E731
    variants = [("fp32", "fp32", None), ("int8 (shipped)", "int8", None), ("int8 with fp32's rule", "int8", fp32_rule)]
    for name, precision, rule in variants:
        captioner = captioners[precision]
        tokens, settings = search_tokens(captioner.vocabulary), captioner.default_settings(3)
        by_batch = {}
        with mock.patch.object(types, "use_context_terms", rule or types.use_context_terms), torch.inference_mode():
            for batch in (8, 100):
                by_batch[batch] = [c for start in range(0, len(records), batch)
                                   for c in decode(captioner.model.decoder, regions[start : start + batch], tokens, settings)]
        pairs = list(zip(by_batch[8], by_batch[100]))
        same = [(a, b) for a, b in pairs if a.token_ids == b.token_ids]
        gap = max((abs(a.log_prob - b.log_prob) for a, b in same), default=0.0)
        print(f"{name:<24} same captions in batches of 8 and of 100: {len(same)}/{len(pairs)}; "
              f"largest log-probability gap among them {gap:.2e}")


if __name__ == "__main__":
    main()
