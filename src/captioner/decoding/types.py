"""What a search needs to know about the vocabulary, and what it returns per image."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from captioner.decoding.endings import EndingRule

if TYPE_CHECKING:
    from captioner.models.decoder import ShowAttendTellDecoder


CONTEXT_TERMS_MAX_IMAGES = 8
"""Searches over at most this many images use the decoder's precomputed context terms
(``project_regions(..., with_context_terms=True)``). A small search waits on reading the
decoder's weights at every step, which the terms save; a large one is bound by arithmetic, and
mapping all of every image's regions then costs more than it saves. On the 2-core CPU, beam 3
(benchmarks/context_terms_crossover.py, four runs): 1.3-1.7x faster for one image, 1.2-1.3x at
4, 1.0-1.1x at 8, 0.8-1.06x at 16, 0.9x at 32, 0.8x at 100."""


def use_context_terms(images: int, decoder: ShowAttendTellDecoder | None = None) -> bool:
    """Whether a search over ``images`` uses the precomputed context terms: small searches, and
    every search of a decoder whose products run in int8. There the two ways quantise at
    different points (each region's terms, or the step's context), so a photo's caption would
    otherwise depend on how many photos share its batch (3% of dev captions did, batches of 8
    against 100); in float32 they agree to rounding."""
    return images <= CONTEXT_TERMS_MAX_IMAGES or getattr(decoder, "product_precision", "fp32") == "int8"


def search_inputs(
    decoder: ShowAttendTellDecoder, regions: torch.Tensor, rows_per_image: int = 1
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """(regions, projected regions, initial state) for a search that keeps ``rows_per_image``
    hypotheses per image, consecutive rows of the state.

    Projected (with the context terms for small searches) and initialised once per image. The
    regions and their projection stay one row per image, shared by the image's hypotheses in
    ``decoder.step``: a search keeps an image's rows together, and drops an image's row from
    these when it drops the image.
    """
    projected, state = decoder.begin(regions, with_context_terms=use_context_terms(regions.size(0), decoder))
    if rows_per_image == 1:
        return regions, projected, state
    hidden, cell = (part.repeat_interleave(rows_per_image, dim=0) for part in state)
    return regions, projected, (hidden, cell)


@dataclass(frozen=True)
class SearchTokens:
    """Ids the search treats specially. ``banned_ids`` are never emitted (<pad>, <start>,
    <unk>): a caption with "<unk>" in it is worse alt text than a plainer one. ``endings``:
    where a caption may not end (None: anywhere); ``decode`` drops it unless
    ``DecodeSettings.block_dangling_endings``."""

    start_id: int
    end_id: int
    banned_ids: tuple[int, ...] = field(default_factory=tuple)
    endings: EndingRule | None = None


@dataclass
class DecodedCaption:
    token_ids: list[int]
    """The words, without <start> and <end>."""
    log_prob: float
    """Sum of the words' log-probabilities (and of <end>'s, when the caption ended)."""
    score: float
    """What the search ranked by: ``log_prob``, length-normalised when a penalty is set."""
    alphas: torch.Tensor
    """(len(token_ids), R): where the decoder looked for each word."""
    finished: bool
    """False when the caption hit ``max_length`` without emitting <end>."""
    constraint_met: bool | None = None
    """For a constrained search: whether the caption contains a constraint token (None when
    the image had no constraint)."""
    constraint_position: int | None = None
    """Index in ``token_ids`` of the token that met the constraint."""


@dataclass(frozen=True)
class Constraint:
    """The caption must contain one of ``token_ids`` (a disjunctive constraint).

    ``once_ids`` may not be written after the constraint is met: stand-in words that are
    replaced in the text (see ``captioner.guidance``) would otherwise show up a second time
    under their own name, and a guide may rule out words that would contradict its word.
    """

    token_ids: tuple[int, ...]
    once_ids: tuple[int, ...] = ()
    within: int | None = None
    """The constraint token must be one of the caption's first ``within`` words (None: anywhere);
    a guided animal is the caption's subject, not an afterthought at its end."""
    margin: float | None = None
    """This image's own ``DecodeSettings.constraint_margin`` (None: the settings'); a guide
    gives ``inf`` to the words it is sure of, so that their caption is always taken."""


def banned_mask(vocab_size: int, banned_ids: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """(V,) additive mask: 0 for allowed words, -inf for banned ones."""
    mask = torch.zeros(vocab_size, device=device)
    if banned_ids:
        mask[list(banned_ids)] = float("-inf")
    return mask


@dataclass(frozen=True)
class DecodeSettings:
    """How to search: ``beam_size`` 1 is greedy decoding.

    ``constraint_margin`` applies to images decoded with a ``Constraint``: the best caption that
    meets it replaces the ordinary caption unless its length-normalised log-probability is more
    than this below the ordinary caption's (``inf``: always replace it).
    """

    beam_size: int = 3
    max_length: int = 20
    length_penalty: float = 0.0
    no_repeat_ngram_size: int = 0
    constraint_margin: float = math.inf
    block_dangling_endings: bool = False
    """Apply ``SearchTokens.endings``: no caption ends on a word or pair of words that the
    training captions (almost) never end on."""
