"""Turning a decoder's next-word scores into captions: greedy, batched beam and constrained search.

Owns: the search strategies and their output (word ids, scores and the attention map of every
word). Works through the decoder's ``init_state`` / ``project_regions`` / ``step`` interface
only; knows nothing of images, files, vocabularies' words or metrics. No strategy ever emits a
``SearchTokens.banned_ids`` token (``<pad>``, ``<start>``, ``<unk>``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from captioner.decoding.beam import beam_search
from captioner.decoding.constrained import constrained_beam_search
from captioner.decoding.endings import EndingRule
from captioner.decoding.greedy import greedy_decode
from captioner.decoding.types import Constraint, DecodedCaption, DecodeSettings, SearchTokens
from captioner.models.decoder import ShowAttendTellDecoder

__all__ = [
    "Constraint",
    "DecodeSettings",
    "DecodedCaption",
    "EndingRule",
    "SearchTokens",
    "beam_search",
    "constrained_beam_search",
    "decode",
    "greedy_decode",
]


def decode(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    settings: DecodeSettings,
    constraints: Sequence[Constraint | None] | None = None,
) -> list[DecodedCaption]:
    """Caption (B, R, D) regions with the search that ``settings`` asks for.

    ``constraints`` (one per image, ``None`` for none): an image whose ordinary caption does not
    already contain one of its constraint's tokens is decoded again by
    ``constrained_beam_search`` with the same beam size, and that caption replaces the ordinary
    one unless its score (length-normalised log-probability) is more than the margin lower (the
    constraint's own ``margin``, else ``settings.constraint_margin``). Every other image gets
    exactly the caption it would get without constraints.
    """
    if settings.beam_size < 1:
        raise ValueError(f"beam size must be at least 1, got {settings.beam_size}")
    if constraints is not None and len(constraints) != regions.size(0):
        raise ValueError(f"{regions.size(0)} images but {len(constraints)} constraints")
    if tokens.endings is not None and not settings.block_dangling_endings:
        tokens = dataclasses.replace(tokens, endings=None)
    results = _unconstrained(decoder, regions, tokens, settings)
    # A caption that already names the word is kept as it is: the constrained search would only
    # look for it again with fewer hypotheses to spare, and could end up with a worse one.
    pending = []
    for index, constraint in enumerate(constraints or ()):
        if constraint is None:
            continue
        allowed = set(constraint.token_ids)
        position = next(
            (p for p, token in enumerate(results[index].token_ids) if token in allowed), None
        )
        if position is None:
            pending.append(index)
        else:
            results[index].constraint_met = True
            results[index].constraint_position = position
    if pending:
        searched = constrained_beam_search(
            decoder,
            regions[pending],
            tokens,
            [constraints[i] for i in pending],  # type: ignore[index,misc]
            beam_size=settings.beam_size,
            max_length=settings.max_length,
            length_penalty_alpha=settings.length_penalty,
            no_repeat_ngram_size=settings.no_repeat_ngram_size,
        )
        for index, caption in zip(pending, searched):
            plain = results[index]
            margin = constraints[index].margin  # type: ignore[index,union-attr]
            margin = settings.constraint_margin if margin is None else margin
            # Keep the ordinary caption when naming the word costs too much: a word the decoder
            # can only fit into a caption it finds absurd ("standing in a shovel") is better
            # left out.
            if caption.constraint_met and caption.score >= plain.score - margin:
                results[index] = caption
            else:
                plain.constraint_met = False
    return results


def _unconstrained(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    settings: DecodeSettings,
) -> list[DecodedCaption]:
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
