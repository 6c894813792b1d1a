"""Choose when to trust the classifier: Flickr8k dev cost against out-of-domain right objects.

Usage: .venv/bin/python benchmarks/guidance_trust_sweep.py [--checkpoint RUN_DIR]
           [--trusts 0.5,0.6,0.7,0.8,inf] [--margins 3,3.5,4,4.5,5,5.5,inf]

Guidance (``captioner.guidance``) takes the guided caption when the classifier's confidence in
its word is at least ``eval.guidance_trust``; below that only when the guided caption's
length-normalised log-probability is at most ``eval.guidance_margin`` below the plain one's.
This decodes Flickr8k dev (1,000 photos, from the JPEGs) and the out-of-domain set (58 photos)
once plainly and once guided at the model's threshold, then scores every (trust, margin) pair:
dev CIDEr-D relative to the decoder alone (the issue's limit: -2%) and the out-of-domain share of
captions that name the main object (target: 70%). Writes
benchmarks/results/guidance_trust_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from ood_eval import PHOTOS, encode_photos, guided_run, names_object  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.guidance import Guide
from captioner.metrics import score_captions

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--trusts", default="0.5,0.6,0.7,0.8,inf")
    parser.add_argument("--margins", default="3,3.5,4,4.5,5,5.5,inf")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="where to write the JSON (default: benchmarks/results/guidance_trust_sweep.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu")
    threshold = captioner.config.eval.guidance_threshold
    settings = captioner.default_settings(3)
    # trust above 1 and margin inf at decoding: every guided caption is kept, select() decides.
    guide = Guide.for_model(captioner.model.encoder, captioner.grid_size, captioner.vocabulary,
                            threshold=threshold, trust=math.inf)
    started = time.perf_counter()
    records = load_records(args.data, split="val")
    dev = guided_run(captioner, encode_photos(captioner, [r.image_path for r in records]), guide, settings)
    annotations = json.loads((PHOTOS / "annotations.json").read_text())
    ood = guided_run(captioner, encode_photos(captioner, [PHOTOS / a["file"] for a in annotations]), guide, settings)
    print(f"decoded {len(records)} dev and {len(annotations)} out-of-domain photos in {time.perf_counter() - started:.0f} s")
    references = {r.image_id: list(r.captions) for r in records}

    def dev_cider(captions: list[str]) -> float:
        return score_captions(references, {r.image_id: c for r, c in zip(records, captions)}, meteor=False).corpus["CIDEr"]

    alone = dev_cider(dev.plain)
    alone_right = sum(names_object(c, a["main_object_synonyms"]) for c, a in zip(ood.plain, annotations))
    print(f"decoder alone: dev CIDEr-D {alone:.4f}, out-of-domain right object {alone_right}/{len(annotations)}")
    results = []
    trusts = [float(t) for t in args.trusts.split(",")]
    margins = [float(m) for m in args.margins.split(",")]
    print(f"threshold {threshold}; cells: dev CIDEr-D vs the decoder alone / out-of-domain right objects")
    print("trust \\ margin | " + " | ".join(f"{m:g}" for m in margins))
    for trust in trusts:
        cells = []
        for margin in margins:
            dev_captions, dev_used = dev.select(threshold, margin, trust)
            ood_captions, ood_used = ood.select(threshold, margin, trust)
            cider = dev_cider(dev_captions)
            right = sum(names_object(c, a["main_object_synonyms"]) for c, a in zip(ood_captions, annotations))
            results.append({"trust": trust, "margin": margin, "dev_CIDEr": cider, "dev_relative": cider / alone - 1,
                            "dev_guided": sum(dev_used), "ood_right_object": right, "ood_guided": sum(ood_used)})
            cells.append(f"{cider / alone - 1:+.2%} / {right}")
        print(f"{trust:g} | " + " | ".join(cells))
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / "guidance_trust_sweep.json"
    out.write_text(json.dumps({"machine": describe_machine(), "checkpoint": captioner.source, "beam_size": 3,
                               "threshold": threshold, "decoder_alone": {"dev_CIDEr": alone, "ood_right_object": alone_right},
                               "photos": len(annotations), "results": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
