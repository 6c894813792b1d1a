"""Vectorised n-gram counts shared by BLEU and CIDEr-D.

Both metrics start from the same per-caption n-gram counts (``str.split()`` tokens, orders 1-4,
as pycocoevalcap's ``precook``). Building them once with numpy, instead of one ``dict`` per
caption, is what makes scoring fast. Knows nothing about how a metric uses the counts.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ImageKey = Hashable


def check_inputs(
    gts: Mapping[ImageKey, Sequence[str]], res: Mapping[ImageKey, Sequence[str]]
) -> list[ImageKey]:
    """The image order of a scorer (``gts``'s), after pycocoevalcap's sanity checks."""
    if gts.keys() != res.keys():
        missing = len(set(gts) ^ set(res))
        raise ValueError(f"references and results must have the same image ids ({missing} differ)")
    for key in gts:
        hypotheses, references = res[key], gts[key]
        if not isinstance(hypotheses, list) or len(hypotheses) != 1:
            raise ValueError(f"image {key!r}: results must be a list of exactly one caption")
        if not isinstance(references, list) or not references:
            raise ValueError(f"image {key!r}: references must be a non-empty list of captions")
    return list(gts)


@dataclass(frozen=True)
class OrderCounts:
    """Distinct n-grams of one order, per caption: parallel arrays sorted by (caption, ngram)."""

    caption: np.ndarray  # int64 caption index
    ngram: np.ndarray  # int64 n-gram id, dense in [0, num_ngrams)
    count: np.ndarray  # int64 occurrences in that caption
    num_ngrams: int


@dataclass(frozen=True)
class NgramTable:
    """All captions of a scored set, references first then one hypothesis per image.

    Caption ``c`` belongs to image ``image_of[c]``; hypotheses are captions
    ``num_references + i`` for image ``i``.
    """

    num_images: int
    num_references: int
    image_of: np.ndarray  # int64 [num_captions]
    lengths: np.ndarray  # int64 [num_captions] token counts
    orders: tuple[OrderCounts, ...]

    @property
    def hypothesis_lengths(self) -> np.ndarray:
        return self.lengths[self.num_references :]

    @property
    def reference_lengths(self) -> np.ndarray:
        return self.lengths[: self.num_references]

    @property
    def references_per_image(self) -> np.ndarray:
        return np.bincount(self.image_of[: self.num_references], minlength=self.num_images)


def build_ngram_table(
    gts: Mapping[ImageKey, Sequence[str]], res: Mapping[ImageKey, Sequence[str]], max_order: int = 4
) -> NgramTable:
    """Count the n-grams of every reference and hypothesis (images in ``gts`` order)."""
    keys = check_inputs(gts, res)
    captions: list[str] = []
    image_of: list[int] = []
    for index, key in enumerate(keys):
        captions.extend(gts[key])
        image_of.extend([index] * len(gts[key]))
    num_references = len(captions)
    captions.extend(res[key][0] for key in keys)
    image_of.extend(range(len(keys)))

    split = [caption.split() for caption in captions]
    lengths = np.fromiter(map(len, split), dtype=np.int64, count=len(split))
    words = [word for tokens in split for word in tokens]
    word_ids = dense_ids(words)
    caption_of_word = np.repeat(np.arange(len(captions), dtype=np.int64), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(lengths) else lengths
    position = np.arange(len(words), dtype=np.int64) - np.repeat(starts, lengths)
    length_of_word = np.repeat(lengths, lengths)

    orders = []
    previous_ids = previous_valid = word_ids
    for order in range(1, max_order + 1):
        valid = np.flatnonzero(position + order <= length_of_word)
        # Identify each n-gram by the dense ids of its order-1 prefix and its last word.
        if order == 1:
            ngram = word_ids[valid]
        else:
            prefix_ids = previous_ids[_prefix_index(valid, previous_valid)]
            ngram = _pair_ids(prefix_ids, word_ids[valid + order - 1])
        orders.append(_count_per_caption(caption_of_word[valid], ngram))
        previous_ids, previous_valid = ngram, valid
    return NgramTable(
        num_images=len(keys),
        num_references=num_references,
        image_of=np.asarray(image_of, dtype=np.int64),
        lengths=lengths,
        orders=tuple(orders),
    )


def _prefix_index(valid: np.ndarray, previous_valid: np.ndarray) -> np.ndarray:
    """Index into the previous order's arrays of the n-grams starting at ``valid``."""
    # An order-n n-gram at word p has its order-(n-1) prefix at the same start p.
    return np.searchsorted(previous_valid, valid)


def dense_ids(words: list[str]) -> np.ndarray:
    """An int64 id per word, equal ids for equal words (first-seen order)."""
    index = {word: i for i, word in enumerate(dict.fromkeys(words))}
    return np.fromiter(map(index.__getitem__, words), dtype=np.int64, count=len(words))


def _pair_ids(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Dense ids for the pairs (first, second)."""
    if len(first) == 0:
        return first
    combined = first * (int(second.max()) + 1) + second
    return unique_inverse(combined)


def _count_per_caption(caption: np.ndarray, ngram: np.ndarray) -> OrderCounts:
    num_ngrams = int(ngram.max()) + 1 if len(ngram) else 0
    key = caption * max(num_ngrams, 1) + ngram
    sorted_keys = np.sort(key)
    first = run_starts(sorted_keys)
    unique_keys = sorted_keys[first]
    counts = np.diff(np.append(first, len(sorted_keys)))
    return OrderCounts(
        caption=unique_keys // max(num_ngrams, 1),
        ngram=unique_keys % max(num_ngrams, 1),
        count=counts.astype(np.int64),
        num_ngrams=num_ngrams,
    )


def group_max(keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct keys, maximum of ``values`` per key)."""
    if len(keys) == 0:
        return keys, values
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    first = run_starts(keys)
    return keys[first], np.maximum.reduceat(values, first)


def lookup(
    sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray, default: float = 0
) -> np.ndarray:
    """``values`` at the position of each query in ``sorted_keys``; ``default`` where absent."""
    if len(sorted_keys) == 0:
        return np.full(len(queries), default, dtype=values.dtype)
    slot = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return np.where(sorted_keys[slot] == queries, values[slot], default)


# numpy's own ``unique`` is avoided: for int64 keys it picks a hash-based path that is several
# times slower than sorting here.


def run_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Index of the first element of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """The distinct values of ``keys``, sorted."""
    sorted_keys = np.sort(keys)
    return sorted_keys[run_starts(sorted_keys)]


def unique_inverse(keys: np.ndarray) -> np.ndarray:
    """Dense ids: equal keys get equal ids, in [0, number of distinct keys)."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    is_new = np.concatenate(([False], sorted_keys[1:] != sorted_keys[:-1]))
    inverse = np.empty(len(keys), dtype=np.int64)
    inverse[order] = np.cumsum(is_new)
    return inverse
