"""Caption text: tokens, and the vocabulary that maps them to ids and back.

Owns: ``tokenize_caption`` (the COCO-evaluation PTB tokenizer, so that a model is trained on
exactly the tokens it is scored on), ``Vocabulary`` (special tokens, building from counts,
encoding/decoding, JSON save/load) and ``CaptionEndings`` (which words the training captions
never end on, kept with the vocabulary). Must not know about tensors, models or metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, SupportsInt

from captioner.errors import CheckpointError
from captioner.tokenization import ptb_tokenize

PAD = "<pad>"
START = "<start>"
END = "<end>"
UNK = "<unk>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, START, END, UNK)


def tokenize_caption(text: str) -> list[str]:
    """Lower-cased PTB tokens without punctuation, exactly as the COCO scorer sees ``text``."""
    return ptb_tokenize(text)


ENDING_MIN_COUNT = 20
"""Occurrences a word (or pair of words) needs before its ending rate is trusted."""
ENDING_MAX_RATE = 0.01
"""A word (pair) that ends fewer than this share of the training captions it occurs in is
treated as one a caption does not end on."""


@dataclass(frozen=True)
class CaptionEndings:
    """Where the training captions (almost) never end, so that a search can refuse to end there.

    Self-critical fine-tuning teaches a decoder that CIDEr-D hardly punishes a caption cut off
    mid-phrase ("a man is playing with a red"); people never write one. Counted on the training
    captions (``count``), kept in ``vocab.json``, applied by the search
    (``captioner.decoding.endings``):

    - ``words``: words that end fewer than ``max_rate`` of the captions they occur in ("a",
      "of", "red"), among those seen at least ``min_count`` times;
    - ``allowed_pairs``: (previous word, word) pairs whose word is in ``words`` but which do end
      captions often enough ("in red");
    - ``pairs``: pairs that (almost) never end a caption although their word often does ("a
      blue": "blue" ends "dressed in blue").

    A caption may not end on ``last`` after ``previous`` when ``dangling(previous, last)``.
    Words and pairs seen less often than ``min_count`` are never held against a caption.
    ``START`` is the previous word of a one-word caption.
    """

    words: frozenset[str]
    pairs: frozenset[tuple[str, str]]
    allowed_pairs: frozenset[tuple[str, str]]
    min_count: int = ENDING_MIN_COUNT
    max_rate: float = ENDING_MAX_RATE

    def dangling(self, previous: str, last: str) -> bool:
        if (previous, last) in self.pairs:
            return True
        return last in self.words and (previous, last) not in self.allowed_pairs

    @classmethod
    def count(
        cls,
        token_lists: Iterable[Sequence[str]],
        known_words: Iterable[str],
        min_count: int = ENDING_MIN_COUNT,
        max_rate: float = ENDING_MAX_RATE,
    ) -> CaptionEndings:
        """Count how often each word and pair of ``known_words`` (the vocabulary) ends a caption."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        if not 0.0 < max_rate < 1.0:
            raise ValueError(f"max_rate must be in (0, 1), got {max_rate}")
        known = set(known_words) | {START}
        word_counts: Counter[str] = Counter()
        word_ends: Counter[str] = Counter()
        pair_counts: Counter[tuple[str, str]] = Counter()
        pair_ends: Counter[tuple[str, str]] = Counter()
        for tokens in token_lists:
            if not tokens:
                continue
            words = [START, *tokens]
            word_counts.update(tokens)
            pair_counts.update(zip(words[:-1], words[1:]))
            word_ends[words[-1]] += 1
            pair_ends[(words[-2], words[-1])] += 1

        def rarely_ends(count: int, ends: int) -> bool:
            return count >= min_count and ends < max_rate * count

        words_set = frozenset(w for w, n in word_counts.items() if w in known and rarely_ends(n, word_ends[w]))
        pairs, allowed = set(), set()
        for pair, n in pair_counts.items():
            if n < min_count or not (pair[0] in known and pair[1] in known):
                continue
            if pair[1] in words_set:
                if not rarely_ends(n, pair_ends[pair]):
                    allowed.add(pair)
            elif rarely_ends(n, pair_ends[pair]):
                pairs.add(pair)
        return cls(words_set, frozenset(pairs), frozenset(allowed), min_count, max_rate)

    def to_dict(self) -> dict[str, Any]:
        return {
            "min_count": self.min_count,
            "max_rate": self.max_rate,
            "words": sorted(self.words),
            # "previous word": a token never holds a space.
            "pairs": sorted(" ".join(p) for p in self.pairs),
            "allowed_pairs": sorted(" ".join(p) for p in self.allowed_pairs),
        }

    @classmethod
    def from_dict(cls, data: Any, source: str) -> CaptionEndings:
        fix = "re-create it with the training run that wrote it, or delete its \"endings\" entry"

        def pairs(key: str) -> frozenset[tuple[str, str]]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(p, str) and len(p.split(" ")) == 2 for p in value):
                raise CheckpointError(f'{source}: endings.{key} must be a list of "word word" pairs; {fix}')
            return frozenset(tuple(p.split(" ")) for p in value)  # type: ignore[misc]

        if not isinstance(data, dict):
            raise CheckpointError(f"{source}: endings must be an object; {fix}")
        words = data.get("words", [])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise CheckpointError(f"{source}: endings.words must be a list of words; {fix}")
        min_count, max_rate = data.get("min_count", ENDING_MIN_COUNT), data.get("max_rate", ENDING_MAX_RATE)
        if not isinstance(min_count, int) or not isinstance(max_rate, (int, float)):
            raise CheckpointError(f"{source}: endings.min_count / max_rate must be numbers; {fix}")
        return cls(frozenset(words), pairs("pairs"), pairs("allowed_pairs"), min_count, float(max_rate))


class Vocabulary:
    """Word <-> id mapping with ``<pad>``=0, ``<start>``=1, ``<end>``=2, ``<unk>``=3.

    Words are ordered by count (most frequent first), ties alphabetically, so the same captions
    always give the same ids.
    """

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __init__(
        self, words: Sequence[str], min_count: int = 1, endings: CaptionEndings | None = None
    ) -> None:
        """``words`` are the ordinary tokens, without the special ones, in id order; ``endings``
        what the training captions say about where a caption ends (None: nothing known)."""
        duplicates = [w for w, n in Counter(words).items() if n > 1]
        if duplicates:
            raise ValueError(f"vocabulary words must be unique; repeated: {duplicates[:3]}")
        clashes = set(words) & set(SPECIAL_TOKENS)
        if clashes:
            raise ValueError(f"vocabulary words may not be special tokens: {sorted(clashes)}")
        self._tokens: list[str] = [*SPECIAL_TOKENS, *words]
        self._ids: dict[str, int] = {token: i for i, token in enumerate(self._tokens)}
        self.min_count = min_count
        self.endings = endings

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_count: int = 5) -> Vocabulary:
        """Keep every token seen at least ``min_count`` times in ``token_lists``, and count where
        those captions end (``CaptionEndings``)."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        token_lists = [list(tokens) for tokens in token_lists]
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, min_count=min_count, endings=CaptionEndings.count(token_lists, kept))

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, special tokens first."""
        return list(self._tokens)

    @property
    def words(self) -> list[str]:
        """The ordinary tokens in id order, without the special ones."""
        return self._tokens[len(SPECIAL_TOKENS):]

    def __len__(self) -> int:
        return len(self._tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._tokens == other._tokens

    def __repr__(self) -> str:
        return f"Vocabulary({len(self)} tokens, min_count={self.min_count})"

    def token_id(self, token: str) -> int:
        return self._ids.get(token, self.unk_id)

    def token(self, token_id: int) -> str:
        return self._tokens[token_id]

    def encode(self, tokens: Sequence[str], max_length: int | None = None) -> list[int]:
        """``<start>`` + word ids + ``<end>``; unknown words become ``<unk>``.

        ``max_length`` caps the number of words (the result then has at most ``max_length + 2``
        ids); ``<end>`` is always kept so that the model learns to stop.
        """
        if max_length is not None:
            if max_length < 0:
                raise ValueError(f"max_length must be >= 0, got {max_length}")
            tokens = tokens[:max_length]
        return [self.start_id, *(self._ids.get(t, self.unk_id) for t in tokens), self.end_id]

    def decode(self, ids: Iterable[SupportsInt]) -> list[str]:
        """Words up to the first ``<end>``, without ``<start>`` and ``<pad>`` (``<unk>`` kept)."""
        words: list[str] = []
        for raw in ids:
            token_id = int(raw)
            if token_id == self.end_id:
                break
            if token_id in (self.start_id, self.pad_id):
                continue
            words.append(self._tokens[token_id])
        return words

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "tokens": list(self._tokens),
            "special": {token: i for i, token in enumerate(SPECIAL_TOKENS)},
            "min_count": self.min_count,
        }
        if self.endings is not None:
            data["endings"] = self.endings.to_dict()
        return data

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0) + "\n",
                              encoding="utf-8")

    @classmethod
    def from_dict(cls, data: Any, source: str = "vocabulary") -> Vocabulary:
        fix = "re-create it with the training run that wrote it"
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list):
            raise CheckpointError(f'{source}: expected {{"tokens": [...], "special": {{...}}}}; {fix}')
        tokens = data["tokens"]
        if not all(isinstance(t, str) for t in tokens):
            raise CheckpointError(f"{source}: every token must be a string; {fix}")
        expected_special = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
        if data.get("special", expected_special) != expected_special or tuple(
            tokens[: len(SPECIAL_TOKENS)]
        ) != SPECIAL_TOKENS:
            raise CheckpointError(
                f"{source}: special tokens must be {expected_special} at the start; {fix}"
            )
        min_count = data.get("min_count", 1)
        if not isinstance(min_count, int):
            raise CheckpointError(f"{source}: min_count must be an integer; {fix}")
        endings = None
        if "endings" in data:
            endings = CaptionEndings.from_dict(data["endings"], source)
        try:
            return cls(tokens[len(SPECIAL_TOKENS):], min_count=min_count, endings=endings)
        except ValueError as error:
            raise CheckpointError(f"{source}: {error}; {fix}") from None

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CheckpointError(f"vocabulary file {path} does not exist; check the run directory") from None
        except (OSError, UnicodeDecodeError) as error:
            raise CheckpointError(f"cannot read vocabulary file {path}: {error}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise CheckpointError(
                f"vocabulary file {path} is not valid JSON ({error.msg} at line {error.lineno}); "
                "re-create it with the training run that wrote it"
            ) from None
        return cls.from_dict(data, source=f"vocabulary file {path}")
