"""CIDEr-D exactly as the COCO caption evaluation reports it under the name "CIDEr".

pycocoevalcap's ``eval.py`` reports ``Cider()`` from its ``cider`` package, which is CIDEr-D
(Vedantam et al. 2015): n-grams of orders 1-4; tf-idf vectors whose document frequency counts
the *images of the scored set* whose references contain the n-gram; idf ``log(N) - log(max(1,
df))``; the hypothesis weight clipped to the reference weight (``min(h, r) * r``); a gaussian
length penalty with ``sigma = 6`` on the difference of the two captions' *bigram* counts (a
quirk of the reference code, kept because the reported numbers depend on it); the mean over
orders, averaged over references and multiplied by 10. Inputs are already tokenized,
space-joined captions. Knows nothing about tokenization or models.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from captioner.metrics._ngrams import NgramTable, build_ngram_table, lookup, sorted_unique


class Cider:
    """CIDEr-D; ``compute_score`` returns (corpus score, per-image scores)."""

    def __init__(self, n: int = 4, sigma: float = 6.0) -> None:
        if not 1 <= n <= 4:
            raise ValueError(f"CIDEr order must be 1..4, got {n}")
        self.n = n
        self.sigma = sigma

    def compute_score(
        self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
    ) -> tuple[float, np.ndarray]:
        """(corpus CIDEr-D, per-image CIDEr-D in ``gts`` order), as pycocoevalcap's ``Cider``."""
        return cider_from_table(build_ngram_table(gts, res, max_order=4), self.n, self.sigma)

    def method(self) -> str:
        return "CIDEr"


def cider_from_table(
    table: NgramTable, n: int = 4, sigma: float = 6.0
) -> tuple[float, np.ndarray]:
    """CIDEr-D from precomputed n-gram counts (shared with BLEU by ``score_captions``)."""
    num_captions = len(table.lengths)
    num_references = table.num_references
    log_num_images = np.log(float(table.num_images))
    similarity = np.zeros((num_references, n))
    for k in range(n):
        counts = table.orders[k]
        stride = max(counts.num_ngrams, 1)
        image = table.image_of[counts.caption]
        is_reference = counts.caption < num_references

        # Document frequency: number of images whose references contain the n-gram.
        image_ngram = sorted_unique(image[is_reference] * stride + counts.ngram[is_reference])
        document_frequency = np.bincount(image_ngram % stride, minlength=counts.num_ngrams)
        idf = log_num_images - np.log(np.maximum(1.0, document_frequency.astype(np.float64)))
        weight = counts.count * idf[counts.ngram]
        norm = np.sqrt(np.bincount(counts.caption, weights=weight**2, minlength=num_captions))

        # Each (image, n-gram) appears at most once among the hypotheses: look up its weight
        # for every reference entry of the same image and n-gram.
        is_hypothesis = ~is_reference
        hypothesis_keys = image[is_hypothesis] * stride + counts.ngram[is_hypothesis]
        order = np.argsort(hypothesis_keys)
        reference_keys = image[is_reference] * stride + counts.ngram[is_reference]
        hypothesis_weight = lookup(
            hypothesis_keys[order], weight[is_hypothesis][order], reference_keys
        )
        reference_weight = weight[is_reference]
        overlap = np.bincount(
            counts.caption[is_reference],
            weights=np.minimum(hypothesis_weight, reference_weight) * reference_weight,
            minlength=num_references,
        )
        hypothesis_norm = norm[num_references:][table.image_of[:num_references]]
        reference_norm = norm[:num_references]
        both = (hypothesis_norm != 0) & (reference_norm != 0)
        similarity[:, k] = np.where(
            both, overlap / np.where(both, hypothesis_norm * reference_norm, 1.0), overlap
        )

    # The reference code measures caption length as its number of bigrams.
    bigrams = np.maximum(table.lengths - 1, 0)
    delta = (bigrams[num_references:][table.image_of[:num_references]] - bigrams[:num_references])
    penalty = np.e ** (-(delta.astype(np.float64) ** 2) / (2 * sigma**2))
    similarity *= penalty[:, None]

    per_image_sum = np.zeros((table.num_images, n))
    np.add.at(per_image_sum, table.image_of[:num_references], similarity)
    scores = per_image_sum.mean(axis=1) / table.references_per_image * 10.0
    return float(np.mean(scores)), scores
