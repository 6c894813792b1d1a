"""Score candidate captions against references: the one entry point of ``captioner.metrics``.

``score_captions`` does what the COCO caption evaluation (pycocoevalcap 1.2, ``COCOEvalCap``
evaluated on the result images) does - PTB tokenization of references and candidates (two
batches), then BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) - and returns the same numbers, without
Java except for METEOR. SPICE is not provided: it needs Stanford CoreNLP models downloaded at run
time. Training validation, ``captioner evaluate`` and ``captioner score`` call this.

Input rules (each violation raises ``DatasetFormatError`` with one line):

* only the images that have a candidate are scored, and every one must have at least one
  reference caption (pycocotools: "Results do not correspond to current coco set");
* a candidate must be a string; an empty candidate, or one that is only punctuation, is scored
  as pycocoevalcap scores it (0 for every metric) rather than rejected, so a model that emits
  nothing is measured, not crashed on;
* references of images without a candidate are ignored (CIDEr-D's document frequencies come from
  the scored images only, as in pycocoevalcap).

Knows nothing about models, checkpoints or files (the CLI reads files).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from captioner.errors import ConfigError, DatasetFormatError
from captioner.metrics._ngrams import build_ngram_table
from captioner.metrics.bleu import bleu_from_table
from captioner.metrics.cider import cider_from_table
from captioner.metrics.meteor import Meteor, MeteorError, meteor_unavailable_reason
from captioner.metrics.rouge import Rouge
from captioner.metrics.tokenizer import tokenize_captions

logger = logging.getLogger(__name__)

BLEU_NAMES = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
METRIC_NAMES: tuple[str, ...] = (*BLEU_NAMES, "METEOR", "ROUGE-L", "CIDEr")
"""Every metric this package reports, in the order of tables and JSON."""

MeteorMode = Literal["auto"] | bool


@dataclass
class CaptionScores:
    """Corpus and per-image scores.

    ``corpus`` always has every key of ``METRIC_NAMES``; a value is ``None`` when the metric was
    not requested or is unavailable (METEOR without Java) - never a made-up 0. ``per_image``
    holds, for each scored image, the metrics that were computed.
    """

    corpus: dict[str, float | None]
    per_image: dict[Hashable, dict[str, float]] = field(default_factory=dict)

    def table(self, digits: int = 4) -> str:
        """An aligned two-column text table; unavailable metrics read ``n/a``."""
        width = max(len(name) for name in self.corpus)
        return "\n".join(
            f"{name:<{width}}  {'n/a' if value is None else f'{value:.{digits}f}'}"
            for name, value in self.corpus.items()
        )


def score_captions(
    references: Mapping[Hashable, Sequence[str]],
    candidates: Mapping[Hashable, str],
    metrics: Collection[str] | None = None,
    meteor: MeteorMode = "auto",
) -> CaptionScores:
    """Score one candidate caption per image against that image's reference captions.

    ``references`` and ``candidates`` hold raw (untokenized) text. ``metrics`` selects a subset
    of ``METRIC_NAMES`` (default: all). ``meteor`` is ``"auto"`` (run it when Java and
    pycocoevalcap are available, else report ``None``), ``True`` (required: raise
    ``MeteorError`` when it cannot run) or ``False`` (skip).
    """
    wanted = _wanted_metrics(metrics)
    image_ids = _scored_images(references, candidates)
    gts = tokenize_captions({image: list(references[image]) for image in image_ids})
    res = tokenize_captions({image: [candidates[image]] for image in image_ids})

    corpus: dict[str, float | None] = dict.fromkeys(METRIC_NAMES)
    per_image: dict[Hashable, dict[str, float]] = {image: {} for image in image_ids}

    def record(name: str, corpus_value: float, image_values: Sequence[float]) -> None:
        corpus[name] = float(corpus_value)
        for image, value in zip(image_ids, image_values):
            per_image[image][name] = float(value)

    if wanted & {*BLEU_NAMES, "CIDEr"}:
        table = build_ngram_table(gts, res, max_order=4)
        if wanted & set(BLEU_NAMES):
            bleu_corpus, bleu_images = bleu_from_table(table, 4)
            for k, name in enumerate(BLEU_NAMES):
                if name in wanted:
                    record(name, bleu_corpus[k], bleu_images[k])
        if "CIDEr" in wanted:
            record("CIDEr", *cider_from_table(table))
    if "ROUGE-L" in wanted:
        record("ROUGE-L", *Rouge().compute_score(gts, res))
    if "METEOR" in wanted and meteor is not False:
        result = _meteor(gts, res, required=meteor is True)
        if result is not None:
            record("METEOR", *result)
    ordered = {
        image: {name: values[name] for name in METRIC_NAMES if name in values}
        for image, values in per_image.items()
    }
    return CaptionScores(corpus=corpus, per_image=ordered)


def _wanted_metrics(metrics: Collection[str] | None) -> set[str]:
    if metrics is None:
        return set(METRIC_NAMES)
    unknown = sorted(set(metrics) - set(METRIC_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown caption metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}"
        )
    return set(metrics)


def _scored_images(
    references: Mapping[Hashable, Sequence[str]], candidates: Mapping[Hashable, str]
) -> list[Hashable]:
    """Candidate images in reference order, after checking both sides."""
    if not candidates:
        raise DatasetFormatError("there are no candidate captions to score")
    missing = [image for image in candidates if image not in references]
    if missing:
        raise DatasetFormatError(
            f"{len(missing)} result image id(s) have no reference captions (first: {missing[0]!r}); "
            "results must use the image ids of the references"
        )
    for image, caption in candidates.items():
        if not isinstance(caption, str):
            raise DatasetFormatError(
                f"the candidate caption of image {image!r} is {type(caption).__name__}, not text"
            )
    image_ids = [image for image in references if image in candidates]
    for image in image_ids:
        captions = references[image]
        if isinstance(captions, str) or not captions:
            raise DatasetFormatError(
                f"image {image!r} needs a list of reference captions, got {captions!r:.60}"
            )
        if not all(isinstance(caption, str) for caption in captions):
            raise DatasetFormatError(f"a reference caption of image {image!r} is not text")
    return image_ids


def _meteor(
    gts: dict[Hashable, list[str]], res: dict[Hashable, list[str]], required: bool
) -> tuple[float, list[float]] | None:
    reason = meteor_unavailable_reason()
    if reason is not None:
        if required:
            raise MeteorError(reason)
        logger.debug("METEOR skipped: %s", reason)
        return None
    try:
        with Meteor() as scorer:
            return scorer.compute_score(gts, res)
    except MeteorError as error:
        if required:
            raise
        logger.warning("METEOR skipped: %s", error)
        return None
