"""BLEU-1..4 exactly as the COCO caption evaluation computes it (pycocoevalcap ``Bleu(4)``).

Papineni et al. (2002) with pycocoevalcap's choices: clipped n-gram counts against the maximum
count in any reference, the *closest* reference length for the brevity penalty (ties go to the
shorter reference), the smoothing constants ``tiny = 1e-15`` / ``small = 1e-9``, corpus scores
from summed counts, and per-image scores with a per-image brevity penalty. Inputs are already
tokenized, space-joined captions. Knows nothing about tokenization or models.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from captioner.metrics._ngrams import NgramTable, build_ngram_table, group_max, lookup

_TINY = 1e-15  # so that a zero match count still gives a (tiny) positive precision
_SMALL = 1e-9  # so that a zero-length hypothesis does not divide by zero


class Bleu:
    """BLEU up to order ``n``; ``compute_score`` returns ``n`` corpus and ``n`` per-image lists."""

    def __init__(self, n: int = 4) -> None:
        if not 1 <= n <= 4:
            raise ValueError(f"BLEU order must be 1..4, got {n}")
        self.n = n

    def compute_score(
        self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
    ) -> tuple[list[float], list[list[float]]]:
        """(corpus BLEU-1..n, per-image BLEU-1..n in ``gts`` order), as pycocoevalcap's ``Bleu``."""
        return bleu_from_table(build_ngram_table(gts, res, max_order=4), self.n)

    def method(self) -> str:
        return "Bleu"


def bleu_from_table(table: NgramTable, n: int = 4) -> tuple[list[float], list[list[float]]]:
    """BLEU from precomputed n-gram counts (shared with CIDEr-D by ``score_captions``)."""
    num_images = table.num_images
    hypothesis_lengths = table.hypothesis_lengths
    orders = np.arange(1, n + 1)
    guess = np.maximum(0, hypothesis_lengths[:, None] - orders[None, :] + 1)
    correct = np.zeros((num_images, n), dtype=np.int64)
    for k in range(n):
        correct[:, k] = _clipped_matches(table, k)
    reference_length = _closest_reference_lengths(table)

    per_image = _bleu(correct, guess, hypothesis_lengths, reference_length)
    corpus = _bleu(
        correct.sum(axis=0, keepdims=True),
        guess.sum(axis=0, keepdims=True),
        hypothesis_lengths.sum(keepdims=True),
        reference_length.sum(keepdims=True),
    )[0]
    return [float(score) for score in corpus], [per_image[:, k].tolist() for k in range(n)]


def _bleu(
    correct: np.ndarray, guess: np.ndarray, test_length: np.ndarray, reference_length: np.ndarray
) -> np.ndarray:
    """Rows of BLEU-1..n: geometric means of the precisions times the brevity penalty."""
    precisions = (correct.astype(np.float64) + _TINY) / (guess.astype(np.float64) + _SMALL)
    running = np.cumprod(precisions, axis=1)
    scores = running ** (1.0 / np.arange(1, correct.shape[1] + 1))
    ratio = (test_length + _TINY) / (reference_length + _SMALL)
    with np.errstate(divide="ignore", over="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / np.where(ratio < 1, ratio, 1.0)), 1.0)
    return scores * penalty[:, None]


def _clipped_matches(table: NgramTable, k: int) -> np.ndarray:
    """Per image: sum over hypothesis n-grams of min(count, max count in one reference)."""
    counts = table.orders[k]
    stride = max(counts.num_ngrams, 1)
    key = table.image_of[counts.caption] * stride + counts.ngram
    is_reference = counts.caption < table.num_references
    reference_keys, max_counts = group_max(key[is_reference], counts.count[is_reference])
    is_hypothesis = ~is_reference
    clipped = np.minimum(
        counts.count[is_hypothesis], lookup(reference_keys, max_counts, key[is_hypothesis])
    )
    hypothesis_image = table.image_of[counts.caption[is_hypothesis]]
    matches = np.bincount(hypothesis_image, weights=clipped, minlength=table.num_images)
    return matches.astype(np.int64)


def _closest_reference_lengths(table: NgramTable) -> np.ndarray:
    """Per image, the reference length closest to the hypothesis length (shorter on ties)."""
    reference_lengths = table.reference_lengths
    image = table.image_of[: table.num_references]
    distance = np.abs(reference_lengths - table.hypothesis_lengths[image])
    scale = int(reference_lengths.max(initial=0)) + 1
    # Lexicographic minimum of (distance, length) per image, as one integer.
    key = distance * scale + reference_lengths
    best = np.full(table.num_images, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, image, key)
    return best % scale
