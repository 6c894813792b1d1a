"""Caption text: tokens, and the vocabulary that maps them to ids and back.

Owns: ``tokenize_caption`` (the COCO-evaluation PTB tokenizer, so that a model is trained on
exactly the tokens it is scored on) and ``Vocabulary`` (special tokens, building from counts,
encoding/decoding, JSON save/load). Must not know about tensors, models or metrics.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
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


class Vocabulary:
    """Word <-> id mapping with ``<pad>``=0, ``<start>``=1, ``<end>``=2, ``<unk>``=3.

    Words are ordered by count (most frequent first), ties alphabetically, so the same captions
    always give the same ids.
    """

    pad_id = 0
    start_id = 1
    end_id = 2
    unk_id = 3

    def __init__(self, words: Sequence[str], min_count: int = 1) -> None:
        """``words`` are the ordinary tokens, without the special ones, in id order."""
        duplicates = [w for w, n in Counter(words).items() if n > 1]
        if duplicates:
            raise ValueError(f"vocabulary words must be unique; repeated: {duplicates[:3]}")
        clashes = set(words) & set(SPECIAL_TOKENS)
        if clashes:
            raise ValueError(f"vocabulary words may not be special tokens: {sorted(clashes)}")
        self._tokens: list[str] = [*SPECIAL_TOKENS, *words]
        self._ids: dict[str, int] = {token: i for i, token in enumerate(self._tokens)}
        self.min_count = min_count

    @classmethod
    def build(cls, token_lists: Iterable[list[str]], min_count: int = 5) -> Vocabulary:
        """Keep every token seen at least ``min_count`` times in ``token_lists``."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        for special in SPECIAL_TOKENS:
            counts.pop(special, None)
        kept = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        return cls(kept, min_count=min_count)

    @property
    def tokens(self) -> list[str]:
        """All tokens in id order, special tokens first."""
        return list(self._tokens)

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
        return {
            "tokens": list(self._tokens),
            "special": {token: i for i, token in enumerate(SPECIAL_TOKENS)},
            "min_count": self.min_count,
        }

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
        try:
            return cls(tokens[len(SPECIAL_TOKENS):], min_count=min_count)
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
