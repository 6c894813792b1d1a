"""Flickr8k dev CIDEr-D of decoder weights under several decoding settings (before/after SCST).

Usage: .venv/bin/python benchmarks/scst_eval.py --base work/runs/f8k_a WEIGHTS [WEIGHTS ...]

``--base`` is the cross-entropy run (its config, vocabulary and feature cache are used); each
WEIGHTS is "base" (that run's own weights), a run directory, or a ``model.safetensors`` /
``last/training_state.safetensors`` file. Every one is decoded greedily, with plain beam 3, and
with the shipped model's settings (beam 3, length penalty 1.0, no repeated trigram), without
classifier guidance; prints CIDEr-D, BLEU-4 and mean caption length, and writes
benchmarks/results/scst_eval.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

from captioner.decoding import DecodeSettings
from captioner.training import checkpoint
from captioner.training.evaluation import caption_records, score_predictions
from captioner.training.loop import TrainingData, build_model, prepare_data

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {
    "greedy": DecodeSettings(beam_size=1, max_length=20),
    "beam3": DecodeSettings(beam_size=3, max_length=20),
    "beam3_lp1_norepeat3 (shipped)": DecodeSettings(beam_size=3, max_length=20, length_penalty=1.0, no_repeat_ngram_size=3),
}


def decoder_weights(spec: str, base: checkpoint.LoadedRun) -> dict[str, torch.Tensor]:
    if spec == "base":
        return checkpoint.decoder_weights(base.weights)
    path = Path(spec)
    if path.is_dir():
        path = path / checkpoint.WEIGHTS_FILE
    tensors = load_file(str(path))
    prefix = "model.decoder." if any(k.startswith("model.") for k in tensors) else "decoder."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_base(run_dir: str, threads: int) -> tuple[checkpoint.LoadedRun, torch.nn.Module, TrainingData]:
    """The base run, a model built from its config (decoder weights to be loaded) and its data."""
    torch.set_num_threads(threads)
    base = checkpoint.load_run(run_dir)
    model = build_model(base.config, base.vocabulary, pretrained_encoder=False)
    return base, model, prepare_data(base.config, model.encoder.preprocess, base.vocabulary)


def dev_scores(
    model: torch.nn.Module, base: checkpoint.LoadedRun, data: TrainingData, settings: DecodeSettings
) -> tuple[dict[str, float], float]:
    """Corpus scores (no METEOR) of ``model``'s captions of the base's dev images, and their mean
    length in words."""
    predictions = caption_records(model, data.val_records, data.val_input, data.input_kind, base.vocabulary,
                                  settings, torch.device("cpu"), progress=False)
    corpus = score_predictions(predictions, meteor=False).corpus
    words = sum(len(p.caption.split()) for p in predictions) / len(predictions)
    return {k: v for k, v in corpus.items() if v is not None}, words


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("weights", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "scst_eval.json")
    args = parser.parse_args()
    base, model, data = load_base(args.base, args.threads)
    results = {"machine": describe_machine(), "command": "benchmarks/scst_eval.py " + " ".join(sys.argv[1:]),
               "images": len(data.val_records), "weights": {}}
    for spec in args.weights:
        model.decoder.load_state_dict(decoder_weights(spec, base))
        rows = {}
        for name, settings in SETTINGS.items():
            corpus, length = dev_scores(model, base, data, settings)
            rows[name] = {"CIDEr": corpus["CIDEr"], "BLEU-4": corpus["BLEU-4"], "mean_words": round(length, 2)}
            print(f"{spec}\t{name}\tCIDEr-D {corpus['CIDEr']:.4f}\tBLEU-4 {corpus['BLEU-4']:.4f}\t{length:.1f} words",
                  flush=True)
        results["weights"][spec] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
