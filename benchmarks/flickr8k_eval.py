"""Flickr8k dev scores of a model, from the photos, for beam sizes 1, 3 and 5.

Usage: .venv/bin/python benchmarks/flickr8k_eval.py [--checkpoint RUN_DIR] [--guidance] [--write-metrics]
       .venv/bin/python benchmarks/flickr8k_eval.py --beams 3 --guidance-sweep   # choose guidance settings

Encodes every dev photo once (EfficientNet-Lite0 on the JPEGs, as `captioner caption` does),
then decodes with each beam size and scores with the COCO metrics (METEOR where Java is present).
``--guidance`` also decodes each beam size with classifier guidance as the model's config sets
it (``eval.guidance_threshold`` / ``guidance_trust`` / ``guidance_margin``: what `captioner caption`
does by default).
``--guidance-sweep`` tries the guide variants of ood_eval.py at several thresholds and margins
(beam 3 only) and writes benchmarks/results/flickr8k_guidance_sweep.json.
``--write-metrics`` stores the table in the checkpoint's ``metrics.json`` (the shipped model's
card), plus the beam-3 scores of the decoder alone on the first 100 dev images, which a test
re-computes; both in the model's own precision (``eval.precision``), a table of another
``--precision`` beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from ood_eval import VARIANTS, encode_photos, guided_run  # noqa: E402

from captioner.api import Captioner
from captioner.data.readers import load_records
from captioner.decoding import decode
from captioner.guidance import Guide
from captioner.metrics import score_captions
from captioner.training.evaluation import search_tokens

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
SUBSET = 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "datasets" / "flickr8k"))
    parser.add_argument("--beams", default="1,3,5")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                        help="Captioner precision (default: the model's own, eval.precision)")
    parser.add_argument("--no-repeat-ngram", type=int, default=None, help="override the model's n-gram blocking")
    parser.add_argument("--length-penalties", default=None,
                        help="comma-separated GNMT alphas to try at each beam size (default: the model's)")
    parser.add_argument("--guidance", action="store_true", help="also decode each beam size with the model's guidance")
    parser.add_argument("--guidance-sweep", action="store_true", help="beam 3: guide variants x thresholds x margins")
    parser.add_argument("--sweep-thresholds", default="0.15,0.2,0.3,0.4,0.5,0.6")
    parser.add_argument("--sweep-margins", default="inf,2,1")
    parser.add_argument("--write-metrics", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    captioner = Captioner.from_pretrained(args.checkpoint, device="cpu", precision=args.precision)
    print(f"precision: {captioner.precision}")
    records = load_records(args.data, split="val")
    started = time.perf_counter()
    regions = encode_photos(captioner, [r.image_path for r in records], desc="encoding dev")
    print(f"encoded {len(records)} dev photos in {time.perf_counter() - started:.0f} s")
    references = {r.image_id: list(r.captions) for r in records}
    table = {}
    subset_scores = None
    penalties = [float(a) for a in args.length_penalties.split(",")] if args.length_penalties else [None]
    runs = [(int(b), a) for b in args.beams.split(",") for a in penalties]
    for beam, alpha in runs:
        settings = captioner.default_settings(beam)
        if args.no_repeat_ngram is not None:
            settings = dataclasses.replace(settings, no_repeat_ngram_size=args.no_repeat_ngram)
        if alpha is not None:
            settings = dataclasses.replace(settings, length_penalty=alpha)
        started = time.perf_counter()
        decoded = []
        for start in range(0, len(regions), 100):
            decoded.extend(decode(captioner.model.decoder, regions[start : start + 100], search_tokens(captioner.vocabulary), settings))
        seconds = time.perf_counter() - started
        candidates = {r.image_id: " ".join(captioner.vocabulary.decode(d.token_ids)) for r, d in zip(records, decoded)}
        scores = score_captions(references, candidates).corpus
        label = f"beam {beam}" if alpha is None else f"beam {beam}, length penalty {alpha}"
        table[label] = {name: scores[name] for name in METRICS}
        print(f"{label} ({seconds:.0f} s): " + "  ".join(
            f"{name} {'n/a' if scores[name] is None else f'{scores[name]:.4f}'}" for name in METRICS))
        if beam == 3 and alpha is None:
            first = [r.image_id for r in records[:SUBSET]]
            subset = score_captions({i: references[i] for i in first}, {i: candidates[i] for i in first}, meteor=False)
            subset_scores = {name: subset.corpus[name] for name in METRICS if subset.corpus[name] is not None}
        if args.guidance and alpha is None:
            guided_label, guided_scores, guided = guided_row(captioner, regions, records, references, settings, beam)
            table[guided_label] = {name: guided_scores[name] for name in METRICS}
            print(f"{guided_label}: " + "  ".join(
                f"{name} {'n/a' if guided_scores[name] is None else f'{guided_scores[name]:.4f}'}" for name in METRICS)
                + f"  (guided {guided} of {len(records)}; CIDEr-D {guided_scores['CIDEr'] / scores['CIDEr'] - 1:+.1%})")
    if args.guidance_sweep:
        sweep(captioner, regions, records, references, args)
    if args.write_metrics:
        path = Path(captioner.source) / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        # The main table is the model's own precision (what captioning it gives by default);
        # another precision's table goes beside it, and so does an earlier main table measured
        # in a precision the model no longer defaults to.
        own = captioner.config.eval.precision
        key = "flickr8k_dev_from_photos" if captioner.precision == own else f"flickr8k_dev_from_photos_{captioner.precision}"
        if key == "flickr8k_dev_from_photos" and "flickr8k_dev_from_photos" in metrics:
            earlier = metrics.get("flickr8k_dev_from_photos_precision", "fp32")
            if earlier != captioner.precision:
                metrics[f"flickr8k_dev_from_photos_{earlier}"] = metrics["flickr8k_dev_from_photos"]
        metrics[key] = table
        if key == "flickr8k_dev_from_photos":
            metrics["flickr8k_dev_from_photos_precision"] = captioner.precision
        metrics["flickr8k_dev_from_photos_note"] = (
            "'beam N': the decoder alone (captioner caption --no-guidance); 'beam N, guided': "
            "with classifier guidance as eval.guidance_* set it, the default of captioner caption; "
            "flickr8k_dev_from_photos in the model's own precision (flickr8k_dev_from_photos_precision), "
            "flickr8k_dev_from_photos_<precision> in another")
        if subset_scores is not None and key == "flickr8k_dev_from_photos":
            metrics[f"flickr8k_dev_first_{SUBSET}_beam3"] = subset_scores
        path.write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"wrote {path}")


def guided_row(captioner: Captioner, regions: torch.Tensor, records: list, references: dict, settings, beam: int):
    """Scores of one beam size with guidance as the model's config sets it."""
    threshold = captioner.config.eval.guidance_threshold
    trust = captioner.config.eval.guidance_trust
    margin = captioner.config.eval.guidance_margin
    run = guided_run(captioner, regions, captioner.guide, settings)
    captions, used = run.select(threshold, math.inf if margin is None else margin, trust)
    scores = score_captions(references, {r.image_id: c for r, c in zip(records, captions)}).corpus
    label = (f"beam {beam}, guided (threshold {threshold}"
             f"{'' if margin is None else f', trust {trust}, margin {margin}'})")
    return label, scores, sum(used)


def sweep(captioner: Captioner, regions: torch.Tensor, records: list, references: dict, args) -> None:
    """Beam 3, every guide variant x threshold x margin; CIDEr-D relative to the decoder alone."""
    thresholds = [float(t) for t in args.sweep_thresholds.split(",")]
    margins = [float(m) for m in args.sweep_margins.split(",")]
    settings = captioner.default_settings(3)
    results: dict[str, dict] = {}
    base = None
    for name, options in VARIANTS.items():
        guide = Guide.for_model(captioner.model.encoder, captioner.grid_size, captioner.vocabulary,
                                threshold=min(thresholds), **options)
        started = time.perf_counter()
        run = guided_run(captioner, regions, guide, settings)
        seconds = time.perf_counter() - started
        if base is None:
            plain = {r.image_id: c for r, c in zip(records, run.plain)}
            base = score_captions(references, plain, meteor=False).corpus["CIDEr"]
            results["decoder alone"] = {"CIDEr": base}
            print(f"sweep, beam 3, decoder alone: CIDEr-D {base:.4f}")
        for threshold in thresholds:
            cells = []
            for margin in margins:
                captions, used = run.select(threshold, margin)
                changed = sum(c != p for c, p in zip(captions, run.plain))
                cider = score_captions(references, {r.image_id: c for r, c in zip(records, captions)},
                                       meteor=False).corpus["CIDEr"]
                results[f"{name}, threshold {threshold}, margin {margin}"] = {
                    "CIDEr": cider, "relative": cider / base - 1, "guided": sum(used), "changed": changed}
                cells.append(f"margin {margin}: {cider:.4f} ({cider / base - 1:+.1%}, {changed} changed)")
            print(f"{name}, threshold {threshold}: " + " | ".join(cells))
        print(f"  ({name}: {seconds:.0f} s to decode plain + guided)")
    out = ROOT / "benchmarks" / "results" / "flickr8k_guidance_sweep.json"
    out.write_text(json.dumps({"machine": describe_machine(), "beam_size": 3, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
