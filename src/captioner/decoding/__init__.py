"""Turning a decoder's next-word scores into captions: greedy and batched beam search.

Owns: the search strategies and their output (word ids, scores and the attention map of every
word). Works through the decoder's ``init_state`` / ``project_regions`` / ``step`` interface
only; knows nothing of images, files, vocabularies' words or metrics.
"""

from __future__ import annotations

import torch

from captioner.decoding.beam import beam_search
from captioner.decoding.greedy import greedy_decode
from captioner.decoding.types import DecodedCaption, DecodeSettings, SearchTokens
from captioner.models.decoder import ShowAttendTellDecoder

__all__ = [
    "DecodeSettings",
    "DecodedCaption",
    "SearchTokens",
    "beam_search",
    "decode",
    "greedy_decode",
]


def decode(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    settings: DecodeSettings,
) -> list[DecodedCaption]:
    """Caption (B, R, D) regions with the search that ``settings`` asks for."""
    if settings.beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {settings.beam_size}")
    if settings.beam_size == 1 and settings.no_repeat_ngram_size == 0:
        return greedy_decode(decoder, regions, tokens, settings.max_length)
    return beam_search(
        decoder,
        regions,
        tokens,
        beam_size=settings.beam_size,
        max_length=settings.max_length,
        length_penalty_alpha=settings.length_penalty,
        no_repeat_ngram_size=settings.no_repeat_ngram_size,
    )
