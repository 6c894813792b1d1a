"""Captions that end mid-phrase ("... playing with a red"), with and without the search's rule.

Usage: .venv/bin/python benchmarks/dangling_endings.py --base work/runs/f8k_a WEIGHTS [WEIGHTS ...]

``--base`` is a Flickr8k run (its config, vocabulary and feature cache are used; its vocabulary's
endings, if any, are replaced by those counted here); each WEIGHTS is "base", a run directory or
a ``model.safetensors`` (as in ``scst_eval.py``). Every one decodes the 1,000 dev images with the
shipped settings (beam 3, length penalty 1.0, no repeated trigram, no guidance), once without
the rule and once per (min_count, max_rate) of ``--rules``, the rule's facts counted on the
training captions. Reports CIDEr-D, BLEU-4, mean words, captions changed, captions cut at the
length limit, and captions that end dangling by a fixed list of English function words and
"determiner + colour" (independent of the rule's own counts). Writes
benchmarks/results/dangling_endings.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from scst_eval import decoder_weights, load_base  # noqa: E402

from captioner.data.text import CaptionEndings, Vocabulary, tokenize_caption
from captioner.decoding import DecodeSettings
from captioner.training.evaluation import caption_records, score_predictions

ROOT = Path(__file__).resolve().parents[1]
FUNCTION_WORDS = {
    "a", "an", "the", "of", "with", "in", "at", "to", "for", "from", "by", "and", "or", "is", "are",
    "its", "their", "his", "while", "into", "onto", "through", "near", "under", "over", "as",
}
DETERMINERS = {"a", "an", "the", "his", "her", "their"}
COLOURS = {"red", "blue", "black", "white", "green", "yellow", "brown", "orange", "pink", "purple", "grey", "gray"}


def ends_dangling(caption: str) -> bool:
    """The independent judge: a function word last, or a determiner and a colour last."""
    words = caption.split()
    if not words:
        return True
    if words[-1] in FUNCTION_WORDS:
        return True
    return len(words) >= 2 and words[-2] in DETERMINERS and words[-1] in COLOURS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--rules", default="20:0.01",
                        help="comma-separated min_count:max_rate pairs to try (default: the shipped 20:0.01)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dangling_endings.json")
    args = parser.parse_args()
    base, model, data = load_base(args.base, args.threads)
    train_tokens = [tokenize_caption(c) for r in data.train_records for c in r.captions]
    words = base.vocabulary.words
    rules: dict[str, CaptionEndings | None] = {"off": None}
    for spec in args.rules.split(","):
        min_count, max_rate = spec.split(":")
        endings = CaptionEndings.count(train_tokens, words, int(min_count), float(max_rate))
        rules[f"min_count {min_count}, max_rate {max_rate}"] = endings
        print(f"rule {spec}: {len(endings.words)} words, {len(endings.pairs)} pairs, "
              f"{len(endings.allowed_pairs)} allowed pairs", flush=True)
    results = {"machine": describe_machine(), "command": "benchmarks/dangling_endings.py " + " ".join(sys.argv[1:]),
               "images": len(data.val_records), "weights": {}}
    for spec in args.weights:
        model.decoder.load_state_dict(decoder_weights(spec, base))
        rows, plain = {}, None
        for name, endings in rules.items():
            vocabulary = Vocabulary(words, base.vocabulary.min_count, endings)
            settings = DecodeSettings(beam_size=3, max_length=base.config.data.max_caption_words, length_penalty=1.0,
                                      no_repeat_ngram_size=3, block_dangling_endings=endings is not None)
            predictions = caption_records(model, data.val_records, data.val_input, data.input_kind, vocabulary,
                                          settings, torch.device("cpu"), progress=False)
            captions = [p.caption for p in predictions]
            corpus = score_predictions(predictions, meteor=False).corpus
            row = {
                "CIDEr": corpus["CIDEr"],
                "BLEU-4": corpus["BLEU-4"],
                "mean_words": round(sum(len(c.split()) for c in captions) / len(captions), 2),
                "dangling": sum(ends_dangling(c) for c in captions),
                "cut_at_length_limit": sum(not p.decoded.finished for p in predictions),
                "dangling_examples": [c for c in captions if ends_dangling(c)][:8],
            }
            if plain is None:
                plain = captions
            else:
                changed = [(a, b) for a, b in zip(plain, captions) if a != b]
                row["changed"] = len(changed)
                row["changed_examples"] = [f"{a}  ->  {b}" for a, b in changed[:12]]
            rows[name] = row
            print(f"{spec}\t{name}\tCIDEr-D {row['CIDEr']:.4f}\tBLEU-4 {row['BLEU-4']:.4f}\t"
                  f"{row['mean_words']} words\tdangling {row['dangling']}\tcut {row['cut_at_length_limit']}\t"
                  f"changed {row.get('changed', '-')}", flush=True)
        results["weights"][spec] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
