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
    """An ``EndingRule`` as tensors on one device, for one search.

    A hypothesis may not end when its last id is in ``words``, except for the pairs whose verdict
    differs from their last word's (allowed pairs of those words, and blocked pairs of the
    others): one sorted tensor of those pairs' keys, looked up by binary search at each step.
    """

    def __init__(self, rule: EndingRule, vocab_size: int, start_id: int, end_id: int, device: torch.device) -> None:
        self.vocab_size, self.start_id, self.end_id = vocab_size, start_id, end_id
        words = set(rule.words)
        self.word_blocked = torch.zeros(vocab_size, dtype=torch.bool, device=device)
        if words:
            self.word_blocked[list(words)] = True
        blocked_pairs, allowed_pairs = set(rule.pairs), set(rule.allowed_pairs)
        exceptions = []
        for pair in blocked_pairs | allowed_pairs:
            blocked = pair in blocked_pairs or (pair[1] in words and pair not in allowed_pairs)
            if blocked != (pair[1] in words):
                exceptions.append(pair[0] * vocab_size + pair[1])
        self.exception_keys = torch.tensor(sorted(exceptions), dtype=torch.long, device=device)

    def blocked(self, sequences: torch.Tensor) -> torch.Tensor:
        """(N,) whether each of the (N, T) hypotheses may not end now (all False while T is 0)."""
        count, length = sequences.shape
        if length == 0:
            return torch.zeros(count, dtype=torch.bool, device=sequences.device)
        last = sequences[:, -1]
        previous = sequences[:, -2] if length > 1 else torch.full_like(last, self.start_id)
        blocked = self.word_blocked[last]
        if self.exception_keys.numel():
            keys = previous * self.vocab_size + last
            found = torch.searchsorted(self.exception_keys, keys).clamp_(max=self.exception_keys.numel() - 1)
            blocked = blocked ^ (self.exception_keys[found] == keys)
        return blocked

    def apply_(self, log_probs: torch.Tensor, sequences: torch.Tensor) -> torch.Tensor:
        """Set <end>'s log-probability to -inf, in place, in the (N, V) rows that may not end."""
        log_probs[:, self.end_id].masked_fill_(self.blocked(sequences), float("-inf"))
        return log_probs


def ending_lookup(
    rule: EndingRule | None, vocab_size: int, start_id: int, end_id: int, device: torch.device
) -> EndingLookup | None:
    return None if rule is None else EndingLookup(rule, vocab_size, start_id, end_id, device)
