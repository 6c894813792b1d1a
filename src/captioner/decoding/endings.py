"""The rule against dangling endings: where a search may not write <end>.

A caption that stops after "with a red" or "a pile of" reads as broken alt text, and a decoder
fine-tuned on CIDEr-D writes a few of them (about 1 in 100 on Flickr8k dev, more on photos
unlike its training set). ``EndingRule`` holds, as token ids, the words and word pairs that the
training captions (almost) never end on (``captioner.data.text.CaptionEndings``); a search
that is given one lets such a hypothesis go on instead of ending. Knows nothing of words.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class EndingRule:
    """<end> may not follow a word in ``words`` unless the caption's last two ids are one of
    ``allowed_pairs``, nor any (previous, last) pair in ``pairs``. A one-word caption's
    previous id is <start>."""

    words: tuple[int, ...] = ()
    pairs: tuple[tuple[int, int], ...] = ()
    allowed_pairs: tuple[tuple[int, int], ...] = ()


class EndingLookup:
    """An ``EndingRule`` as tensors on one device, for one search."""

    def __init__(self, rule: EndingRule, vocab_size: int, start_id: int, end_id: int, device: torch.device) -> None:
        self.vocab_size, self.start_id, self.end_id = vocab_size, start_id, end_id
        self.word_blocked = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if rule.words:
            self.word_blocked[list(rule.words)] = True
        self.pair_keys = self._keys(rule.pairs, device)
        self.allowed_keys = self._keys(rule.allowed_pairs, device)

    def _keys(self, pairs: tuple[tuple[int, int], ...], device: torch.device) -> torch.Tensor:
        keys = sorted(previous * self.vocab_size + last for previous, last in pairs)
        return torch.tensor(keys, dtype=torch.long, device=device)

    def blocked(self, sequences: torch.Tensor) -> torch.Tensor:
        """(N,) whether each of the (N, T) hypotheses may not end now (all False while T is 0)."""
        count, length = sequences.shape
        if length == 0:
            return torch.zeros(count, dtype=torch.bool, device=sequences.device)
        last = sequences[:, -1]
        previous = sequences[:, -2] if length > 1 else torch.full_like(last, self.start_id)
        keys = previous * self.vocab_size + last
        blocked = self.word_blocked[last]
        if self.allowed_keys.numel():
            blocked = blocked & ~torch.isin(keys, self.allowed_keys)
        if self.pair_keys.numel():
            blocked = blocked | torch.isin(keys, self.pair_keys)
        return blocked

    def apply_(self, log_probs: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """Set <end>'s log-probability to -inf, in place, in the (N, V) rows that may not end."""
        blocked = self.blocked(sequences)
        end = log_probs[:, self.end_id]
        log_probs[:, self.end_id] = torch.where(blocked, float("-inf"), end)
        return log_probs


def ending_lookup(
    rule: EndingRule | None, vocab_size: int, start_id: int, end_id: int, device: torch.device
) -> EndingLookup | None:
    return None if rule is None else EndingLookup(rule, vocab_size, start_id, end_id, device)
