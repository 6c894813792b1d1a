"""Turning a decoder's next-word scores into captions: greedy and batched beam search.

Owns: the search strategies and their output (word ids, scores and the attention map of every
word). Works through the decoder's ``init_state`` / ``project_regions`` / ``step`` interface
only; knows nothing of images, files, vocabularies' words or metrics.
"""

from captioner.decoding.beam import beam_search
from captioner.decoding.greedy import greedy_decode
from captioner.decoding.types import DecodedCaption, SearchTokens

__all__ = ["DecodedCaption", "SearchTokens", "beam_search", "greedy_decode"]
