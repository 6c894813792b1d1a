"""CIDEr-D as a training reward: document frequencies fixed on a corpus, captions scored one by one.

``Cider`` (the evaluation metric) takes its document frequencies from the set being scored, which
is right for reporting and wrong for a reward: self-critical training scores a few dozen images
per step, and idf over 50 images says little about which words are informative. Here the
frequencies come once from all training references (as in Rennie et al. 2017 and ruotianluo's
``CiderD(df="corpus")``); everything else is the CIDEr-D formula of ``cider.py``: orders 1-4,
``min(h, r) * r`` clipping, the gaussian length penalty on the bigram-count quirk, x10.

Scoring ``CiderDReward(corpus).scores(...)`` with ``corpus`` equal to the scored set gives
exactly what ``Cider`` gives (tested), so the two cannot drift apart.

Inputs are token lists (already tokenized); reference vectors are cached per image key.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

import numpy as np

MAX_ORDER = 4
SIGMA = 6.0

Ngram = tuple[str, ...]
_Vector = tuple[list[dict[Ngram, float]], list[float], int]
"""Per order: n-gram -> tf-idf weight; per order: the vector's norm; the bigram-count "length"."""


def _ngram_counts(tokens: Sequence[str]) -> Counter[Ngram]:
    counts: Counter[Ngram] = Counter()
    for order in range(1, MAX_ORDER + 1):
        for start in range(len(tokens) - order + 1):
            counts[tuple(tokens[start : start + order])] += 1
    return counts


class CiderDReward:
    """CIDEr-D of captions against their image's references, idf from ``corpus``."""

    def __init__(self, corpus: Mapping[Hashable, Sequence[Sequence[str]]]) -> None:
        """``corpus``: image key -> tokenized reference captions; also the references scored against."""
        if not corpus:
            raise ValueError("CIDEr-D reward needs at least one image with references")
        document_frequency: Counter[Ngram] = Counter()
        self._reference_counts: dict[Hashable, list[Counter[Ngram]]] = {}
        for key, references in corpus.items():
            counts = [_ngram_counts(tokens) for tokens in references]
            self._reference_counts[key] = counts
            document_frequency.update(set().union(*counts) if counts else set())
        self._log_num_images = math.log(float(len(corpus)))
        self._log_document_frequency = {
            ngram: math.log(float(max(1, count))) for ngram, count in document_frequency.items()
        }
        self._reference_vectors: dict[Hashable, list[_Vector]] = {}

    def __contains__(self, key: Hashable) -> bool:
        return key in self._reference_counts

    def _vector(self, counts: Counter[Ngram]) -> _Vector:
        weights: list[dict[Ngram, float]] = [{} for _ in range(MAX_ORDER)]
        norms = [0.0] * MAX_ORDER
        length = 0
        for ngram, term_frequency in counts.items():
            order = len(ngram) - 1
            # An n-gram no reference in the corpus has gets df 0 -> log(max(1, 0)) = 0.
            weight = float(term_frequency) * (self._log_num_images - self._log_document_frequency.get(ngram, 0.0))
            weights[order][ngram] = weight
            norms[order] += weight * weight
            if order == 1:
                length += term_frequency
        return weights, [math.sqrt(n) for n in norms], length

    def _references(self, key: Hashable) -> list[_Vector]:
        vectors = self._reference_vectors.get(key)
        if vectors is None:
            vectors = [self._vector(counts) for counts in self._reference_counts[key]]
            self._reference_vectors[key] = vectors
        return vectors

    def score(self, tokens: Sequence[str], key: Hashable) -> float:
        """CIDEr-D of one caption against the references of image ``key``."""
        return self._score(tokens, self._references(key))

    def score_against(self, tokens: Sequence[str], references: Sequence[Sequence[str]]) -> float:
        """CIDEr-D of one caption against the given tokenized captions, with the corpus's idf
        (e.g. how much a candidate caption agrees with a photo's other candidates)."""
        return self._score(tokens, [self._vector(_ngram_counts(r)) for r in references])

    def _score(self, tokens: Sequence[str], references: list[_Vector]) -> float:
        if not references:
            return 0.0
        hypothesis, hypothesis_norms, hypothesis_length = self._vector(_ngram_counts(tokens))
        total = 0.0
        for reference, reference_norms, reference_length in references:
            delta = float(hypothesis_length - reference_length)
            penalty = math.exp(-(delta * delta) / (2 * SIGMA * SIGMA))
            similarity = 0.0
            for order in range(MAX_ORDER):
                value = 0.0
                reference_weights = reference[order]
                for ngram, weight in hypothesis[order].items():
                    reference_weight = reference_weights.get(ngram)
                    if reference_weight is not None:
                        value += min(weight, reference_weight) * reference_weight
                if hypothesis_norms[order] != 0 and reference_norms[order] != 0:
                    value /= hypothesis_norms[order] * reference_norms[order]
                similarity += value * penalty
            total += similarity / MAX_ORDER
        return total / len(references) * 10.0

    def scores(self, captions: Sequence[Sequence[str]], keys: Sequence[Hashable]) -> np.ndarray:
        """CIDEr-D of each caption against the references of the image at the same position."""
        if len(captions) != len(keys):
            raise ValueError(f"{len(captions)} captions but {len(keys)} image keys")
        return np.array([self.score(tokens, key) for tokens, key in zip(captions, keys)], dtype=np.float64)
