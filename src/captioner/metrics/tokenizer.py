"""Batch PTB tokenization of caption dictionaries, as pycocoevalcap's ``PTBTokenizer.tokenize``.

pycocoevalcap tokenizes every caption of a dictionary in one Java run, in dictionary order, and
returns ``{image: ["space joined tokens", ...]}``; images without captions are left out. This
module does the same with :mod:`captioner.tokenization` (no Java). Knows nothing about metrics.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from captioner.tokenization import ptb_tokenize_lines


def tokenize_captions(
    captions_for_image: Mapping[Hashable, Sequence[str | Mapping[str, Any]]],
) -> dict[Hashable, list[str]]:
    """``{image: [caption, ...]}`` -> ``{image: ["tok tok tok", ...]}``, in one batch.

    A caption is a string or, as in pycocoevalcap, a COCO annotation dict with a ``"caption"``.
    """
    image_of: list[Hashable] = []
    texts: list[str] = []
    for image, captions in captions_for_image.items():
        for caption in captions:
            image_of.append(image)
            texts.append(caption if isinstance(caption, str) else caption["caption"])
    tokenized: dict[Hashable, list[str]] = {}
    for image, tokens in zip(image_of, ptb_tokenize_lines(texts)):
        tokenized.setdefault(image, []).append(" ".join(tokens))
    return tokenized


class PTBTokenizer:
    """Drop-in for ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer``, without Java."""

    def tokenize(
        self, captions_for_image: Mapping[Hashable, Sequence[str | Mapping[str, Any]]]
    ) -> dict[Hashable, list[str]]:
        return tokenize_captions(captions_for_image)
