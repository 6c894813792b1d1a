"""Flickr8k dev CIDEr-D of ensembles of decoders, each reading its own encoder's cached grid.

Usage: .venv/bin/python benchmarks/ensemble_probe.py --base RUN --caches lite0=DIR,lite2=DIR \
           [--weights 0.5,0.5] CACHE:WEIGHTS [CACHE:WEIGHTS ...]

``--base`` is a run with the members' vocabulary (its config and dev records are used). Each
member is ``CACHE:WEIGHTS``: the name of one of ``--caches`` (feature caches of the dev photos,
all with the same grid) and decoder weights as in ``scst_eval.py`` (a run or export directory).
The members' next-word distributions are mixed with ``--weights`` (default: equal), p(w) =
sum_i weight_i p_i(w), and the search runs on the mixture with the shipped decoding settings
(beam 3, length penalty 1.0, no repeated trigram, no dangling endings, no guidance). Prints
CIDEr-D and BLEU-4 and appends one JSON line to ``--out``.

``--teacher-dataset DIR``: instead, caption the base's training photos with the ensemble (the
caches must hold them) and write DIR as a copy of the base's Flickr8k folder (split lists and
images linked, not copied) whose token file adds each training photo's ensemble caption as its
sixth caption: the data of a distillation run (BENCHMARKS.md, "Ensembles of decoders").

"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from scst_eval import decoder_weights, load_base  # noqa: E402

from captioner.data.readers.flickr8k import SPLIT_FILES, TOKEN_FILE
from captioner.decoding import DecodeSettings
from captioner.encoders.cache import FeatureCache
from captioner.models.ensemble import DecoderEnsemble
from captioner.training.evaluation import caption_records, score_predictions
from captioner.training.inputs import CachedInput

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--caches", required=True, help="name=DIR pairs, comma-separated")
    parser.add_argument("--weights", help="comma-separated mixture weights (default: equal)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ensemble_probe.jsonl")
    parser.add_argument("--teacher-dataset", type=Path, help="write a Flickr8k folder with the ensemble's captions added")
    parser.add_argument("members", nargs="+")
    args = parser.parse_args()
    base, model, data = load_base(args.base, args.threads)
    caches = dict(pair.split("=", 1) for pair in args.caches.split(","))
    inputs = {name: CachedInput(FeatureCache.open(path)) for name, path in caches.items()}
    names = list(caches)
    width = model.decoder.feature_dim
    slices = {name: slice(i * width, (i + 1) * width) for i, name in enumerate(names)}

    members, member_slices = [], []
    for spec in args.members:
        cache, weights_path = spec.split(":", 1)
        decoder = copy.deepcopy(model.decoder)
        decoder.load_state_dict(decoder_weights(weights_path, base))
        members.append(decoder.eval())
        member_slices.append(slices[cache])
    weights = [float(w) for w in args.weights.split(",")] if args.weights else [1 / len(members)] * len(members)
    if len(weights) != len(members):
        parser.error(f"{len(members)} members but {len(weights)} weights")
    model.decoder = DecoderEnsemble(members, member_slices, weights).eval()

    def load_input(record, index):  # noqa: ANN001, ANN202
        return torch.cat([inputs[name](record, index) for name in names], dim=-1)

    settings = DecodeSettings(beam_size=3, max_length=base.config.data.max_caption_words, length_penalty=1.0,
                              no_repeat_ngram_size=3, block_dangling_endings=True)
    if args.teacher_dataset:
        write_teacher_dataset(args.teacher_dataset, Path(base.config.data.path), caption_records(
            model, data.train_records, load_input, data.input_kind, base.vocabulary, settings, torch.device("cpu")))
        return
    started = time.perf_counter()
    predictions = caption_records(model, data.val_records, load_input, data.input_kind, base.vocabulary,
                                  settings, torch.device("cpu"), progress=False)
    corpus = score_predictions(predictions, meteor=False).corpus
    row = {"members": args.members, "weights": weights, "caches": caches, "images": len(predictions),
           "CIDEr": round(corpus["CIDEr"], 4), "BLEU-4": round(corpus["BLEU-4"], 4),
           "seconds": round(time.perf_counter() - started, 1), "machine": describe_machine()}
    print(f"CIDEr-D {row['CIDEr']:.4f}  BLEU-4 {row['BLEU-4']:.4f}  weights {weights}  {' '.join(args.members)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")


def write_teacher_dataset(out: Path, source: Path, predictions: list) -> None:
    """``source`` (a Flickr8k folder) with each prediction's caption added to its photo's captions."""
    source = source.resolve()
    lines = (source / TOKEN_FILE).read_text(encoding="utf-8").splitlines()
    lines += [f"{Path(p.record.image_path).name}#5\t{p.caption}" for p in predictions]
    out.mkdir(parents=True, exist_ok=True)
    (out / TOKEN_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    for name in (*SPLIT_FILES.values(), "images", "README.md"):
        if (source / name).exists() and not (out / name).exists():
            (out / name).symlink_to(source / name)
    print(f"wrote {out}: {len(predictions)} teacher captions, e.g. {predictions[0].caption!r}")


if __name__ == "__main__":
    main()
