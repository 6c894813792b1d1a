"""ROUGE-L exactly as the COCO caption evaluation computes it (pycocoevalcap ``Rouge``).

Lin (2004): longest common subsequence between the hypothesis and each reference; the best
precision and the best recall over the references (taken separately, as the reference code
does) combine into an F-measure with ``beta = 1.2``. Tokens come from ``str.split(" ")`` like
the reference code, so an empty caption is one empty token. The LCS lengths are computed with
the bit-parallel algorithm of Hyyrö (2004), vectorised over all (hypothesis, reference) pairs
with numpy. Inputs are already tokenized, space-joined captions. Knows nothing about
tokenization or models.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np

from captioner.metrics._ngrams import check_inputs, dense_ids, lookup, run_starts

BETA = 1.2
_WORD_BITS = 64  # longest hypothesis whose LCS bit vector fits one uint64


class Rouge:
    """ROUGE-L; ``compute_score`` returns (corpus mean, per-image scores)."""

    def __init__(self, beta: float = BETA) -> None:
        self.beta = beta

    def compute_score(
        self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
    ) -> tuple[float, np.ndarray]:
        """(mean ROUGE-L, per-image ROUGE-L in ``gts`` order), as pycocoevalcap's ``Rouge``."""
        keys = check_inputs(gts, res)
        hypotheses = [res[key][0].split(" ") for key in keys]
        references = [reference.split(" ") for key in keys for reference in gts[key]]
        image_of = np.repeat(np.arange(len(keys)), [len(gts[key]) for key in keys])
        pair_hypotheses = [hypotheses[image] for image in image_of]
        common = lcs_lengths(pair_hypotheses, references)

        hypothesis_length = np.array([len(h) for h in pair_hypotheses], dtype=np.float64)
        reference_length = np.array([len(r) for r in references], dtype=np.float64)
        best_precision = np.zeros(len(keys))
        best_recall = np.zeros(len(keys))
        np.maximum.at(best_precision, image_of, common / hypothesis_length)
        np.maximum.at(best_recall, image_of, common / reference_length)
        beta2 = self.beta**2
        nonzero = (best_precision != 0) & (best_recall != 0)
        denominator = np.where(nonzero, best_recall + beta2 * best_precision, 1.0)
        scores = np.where(
            nonzero, ((1 + beta2) * best_precision * best_recall) / denominator, 0.0
        )
        return float(np.mean(scores)), scores

    def method(self) -> str:
        return "Rouge"


def lcs_lengths(first: Sequence[Sequence[str]], second: Sequence[Sequence[str]]) -> np.ndarray:
    """Length of the longest common subsequence of each pair ``(first[i], second[i])``."""
    if len(first) != len(second):
        raise ValueError("lcs_lengths needs two sequences of the same length")
    result = np.zeros(len(first), dtype=np.int64)
    # LCS is symmetric: the shorter side of each pair becomes the bit vector.
    pairs = [(a, b) if len(a) <= len(b) else (b, a) for a, b in zip(first, second)]
    vectorised = [i for i, (short, _) in enumerate(pairs) if len(short) <= _WORD_BITS]
    for i in set(range(len(pairs))).difference(vectorised):
        result[i] = _lcs_bigint(*pairs[i])
    if vectorised:
        result[vectorised] = _lcs_uint64(
            [pairs[i][0] for i in vectorised], [pairs[i][1] for i in vectorised]
        )
    return result


def _lcs_bigint(bits_side: Sequence[str], scan_side: Sequence[str]) -> int:
    """Hyyrö's bit-parallel LCS with one Python integer as the bit vector (any length)."""
    masks: dict[str, int] = {}
    for position, token in enumerate(bits_side):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(bits_side)) - 1
    state = full
    for token in scan_side:
        match = masks.get(token, 0)
        matched = state & match
        state = ((state + matched) | (state & ~match)) & full
    return len(bits_side) - bin(state).count("1")


def _lcs_uint64(
    bits_sides: Sequence[Sequence[str]], scan_sides: Sequence[Sequence[str]]
) -> np.ndarray:
    """Hyyrö's algorithm for many pairs at once; every ``bits_sides`` entry has <= 64 tokens."""
    num_pairs = len(bits_sides)
    bits_pair, bits_token, bits_position = _flatten(bits_sides)
    scan_pair, scan_token, scan_position = _flatten(scan_sides)
    tokens = dense_ids(bits_token + scan_token)
    bits_token, scan_token = tokens[: len(bits_token)], tokens[len(bits_token) :]
    stride = int(tokens.max(initial=0)) + 1

    # Per (pair, token): the bits of the positions where the token occurs on the bits side.
    key = bits_pair * stride + bits_token
    order = np.argsort(key, kind="stable")
    key = key[order]
    power = np.left_shift(np.uint64(1), bits_position[order].astype(np.uint64))
    first = run_starts(key)
    unique_keys = key[first]
    masks = np.bitwise_or.reduceat(power, first) if len(first) else power
    match = np.zeros((num_pairs, int(scan_position.max(initial=0)) + 1), dtype=np.uint64)
    match[scan_pair, scan_position] = lookup(
        unique_keys, masks, scan_pair * stride + scan_token, default=0
    ).astype(np.uint64)

    lengths = np.array([len(tokens) for tokens in bits_sides], dtype=np.uint64)
    # Bits at or above a pair's length only ever collect carries; they are masked at the end.
    full = np.where(
        lengths >= _WORD_BITS,
        np.uint64(np.iinfo(np.uint64).max),
        (np.uint64(1) << np.minimum(lengths, _WORD_BITS - 1)) - np.uint64(1),
    )
    state = full.copy()
    for column in match.T:
        matched = state & column
        state = (state + matched) | (state & ~column)
    return _popcount(~state & full).astype(np.int64)


def _flatten(sequences: Sequence[Sequence[str]]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(sequence index, token, position) of every token."""
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    pair = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(pair), dtype=np.int64) - starts
    return pair, [token for tokens in sequences for token in tokens], position


def _popcount(values: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(values)
    as_bytes = values.astype("<u8").view(np.uint8).reshape(len(values), 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1)
