"""From an image's ImageNet scores to a decoding constraint, and from the decoded ids to words.

A ``Guide`` belongs to one model's vocabulary. For each image it

1. reads the encoder's own ImageNet classifier off the region grid (for EfficientNet-Lite0's
   ``final`` layer that is average pooling + the linear head, so no second CNN pass),
2. takes the caption word of the top category, adds up the probabilities of all categories
   that map to that word (120 dog breeds are one "dog") and, when the sum reaches
   ``threshold``, builds a ``Constraint``: the caption must contain the word, its plural, a word that also names it
   ("puppy"), or - for a word the vocabulary lacks - the stand-in of its kind ("animal" for
   "koala"),
3. turns the decoded ids into words, writing the real word where the stand-in met the
   constraint ("a koala sitting in a tree") and fixing the article before it ("an iguana").

Owns nothing of the search itself (``captioner.decoding.constrained``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from captioner.data.text import Vocabulary
from captioner.decoding.types import Constraint, DecodedCaption
from captioner.guidance.words import (
    KIND_STAND_INS,
    CaptionWord,
    caption_words,
    fix_article,
    imagenet_table,
    plural,
)

IMAGENET_CLASSES = 1000
DEFAULT_THRESHOLD = 0.2
"""Chosen on Flickr8k dev with the cross-entropy decoder shipped at the time (the lowest tried
whose CIDEr-D stayed within 2% of that decoder alone); kept for the self-critical decoder."""
DEFAULT_TRUST = 0.6
"""At or above this confidence the classifier is trusted: its word goes into the caption
whatever the decoder thinks of the result (the constraint's margin is ``inf``)."""
DEFAULT_MARGIN = 4.5
"""Below ``DEFAULT_TRUST`` the guided caption is kept only if its length-normalised
log-probability is at most this much below the plain caption's: an unsure classifier and a
decoder that finds the result absurd ("a boy sitting in a pile of mushroom leaves") together
are usually wrong. Trust and margin were chosen together with the self-critical decoder as the
middle of the region where Flickr8k dev stays within 2% of the decoder alone and the
out-of-domain set keeps its right objects (BENCHMARKS.md, benchmarks/guidance_trust_sweep.py)."""
LIVING_KINDS = frozenset({"animal", "bird", "fish", "sea creature", "insect"})
SUBJECT_WITHIN = 5
"""A guided living thing must be among the first five words ("a black and white cat"): the
caption is about it, instead of "a dog is running through the grass with a koala"."""

RegionClassifier = Callable[[torch.Tensor], torch.Tensor]
"""(B, R, D) region features -> (B, 1000) ImageNet logits."""


@dataclass(frozen=True)
class Label:
    """One of the classifier's top categories for an image."""

    label: str
    """The ImageNet category as torchvision names it ("tabby")."""
    word: str | None
    """Its plain caption word ("cat"); None for things that are not a main object."""
    confidence: float
    """The classifier's probability of the category."""

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "word": self.word, "confidence": round(self.confidence, 4)}


@dataclass(frozen=True)
class ImageGuidance:
    """What the classifier says about one image, and the constraint that follows from it."""

    labels: tuple[Label, ...]
    word: CaptionWord | None
    """The word the caption should name, or None when no word reaches the threshold."""
    confidence: float
    """Summed probability of the categories that map to the top category's word (0 when that
    category has no word)."""
    constraint: Constraint | None
    """None when there is no word, or the vocabulary has neither it nor a stand-in."""


@dataclass(frozen=True)
class _Plan:
    """How one caption word is decoded with one vocabulary."""

    constraint: Constraint
    replacements: dict[int, str]
    """Stand-in token id -> the text written in its place."""


def region_classifier(encoder: torch.nn.Module, grid_size: tuple[int, int]) -> RegionClassifier | None:
    """The encoder's ImageNet classifier as a function of its region features, or None.

    Encoders that keep the classifier after their grid (``classifier_tail``: EfficientNet-Lite0)
    have one; torchvision backbones drop theirs and the small scenes CNN never had one.
    """
    tail = getattr(encoder, "classifier_tail", None)
    head = tail[-1] if isinstance(tail, torch.nn.Sequential) and len(tail) else None
    if not isinstance(head, torch.nn.Linear) or head.out_features != IMAGENET_CLASSES:
        return None
    height, width = grid_size

    def classify(regions: torch.Tensor) -> torch.Tensor:
        grid = regions.transpose(1, 2).reshape(regions.size(0), regions.size(2), height, width)
        return tail(grid.to(head.weight.dtype))

    return classify


class Guide:
    """Classifier-guided decoding for one vocabulary (see the module docstring)."""

    def __init__(
        self,
        vocabulary: Vocabulary,
        classify: RegionClassifier,
        threshold: float = DEFAULT_THRESHOLD,
        top_k: int = 5,
        trust: float = DEFAULT_TRUST,
        subject_within: int | None = SUBJECT_WITHIN,
        subject_kinds: frozenset[str] = LIVING_KINDS,
        stand_in_known_words: bool = False,
        rule_out_stand_ins: bool = False,
    ) -> None:
        """``trust``: from this confidence on, a constraint carries margin ``inf``: its caption
        is taken whatever the search's ``constraint_margin`` (above 1: never).
        ``subject_within``: a word of ``subject_kinds`` must be one of the caption's first
        words (None: anywhere). The last two switch on alternatives that were measured and not
        kept (BENCHMARKS.md): ``stand_in_known_words`` lets a known word also be met by its
        kind's stand-in; ``rule_out_stand_ins`` bans all of its kind's stand-ins ("dog" for an
        animal) once the word is placed."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"guidance threshold must be between 0 and 1, got {threshold}")
        if not trust >= 0.0:
            raise ValueError(f"guidance trust must be a probability (above 1: never), got {trust}")
        self.vocabulary = vocabulary
        self.trust = trust
        self.classify = classify
        self.threshold = threshold
        self.top_k = top_k
        self.stand_in_known_words = stand_in_known_words
        self.rule_out_stand_ins = rule_out_stand_ins
        self.subject_within = subject_within
        self.subject_kinds = subject_kinds
        table = imagenet_table()
        self._names = [name for name, _ in table]
        self._words = sorted({word for _, word in table if word is not None})
        index = {word: i for i, word in enumerate(self._words)}
        # Category -> word column (or an extra "no word" column) for summing probabilities.
        self._category_word = torch.tensor(
            [index[word] if word is not None else len(self._words) for _, word in table]
        )
        self._plans: dict[str, _Plan | None] = {}

    @classmethod
    def for_model(
        cls,
        encoder: torch.nn.Module,
        grid_size: tuple[int, int],
        vocabulary: Vocabulary,
        threshold: float = DEFAULT_THRESHOLD,
        **options: Any,
    ) -> Guide | None:
        """A guide for a model whose encoder has an ImageNet classifier; None otherwise."""
        classify = region_classifier(encoder, grid_size)
        return None if classify is None else cls(vocabulary, classify, threshold, **options)

    def plan(self, word: CaptionWord) -> _Plan | None:
        """The constraint and the stand-in replacements for ``word`` (None: nothing to decode)."""
        if word.text not in self._plans:
            self._plans[word.text] = self._make_plan(word)
        return self._plans[word.text]

    def _make_plan(self, word: CaptionWord) -> _Plan | None:
        vocabulary = self.vocabulary
        direct = {
            vocabulary.token_id(text)
            for text in (word.text, word.plural, *word.also)
            if text in vocabulary
        }
        replacements: dict[int, str] = {}
        if word.text not in vocabulary or self.stand_in_known_words:
            stand_in = next((s for s in KIND_STAND_INS[word.kind] if s in vocabulary), None)
            if stand_in is not None and stand_in != word.text:
                known = caption_words().get(stand_in)
                stand_in_plural = known.plural if known is not None else plural(stand_in)
                for text, written in ((stand_in, word.text), (stand_in_plural, word.plural)):
                    token = vocabulary.token_id(text)
                    if text in vocabulary and token not in direct:
                        replacements[token] = written
        if not direct and not replacements:
            return None
        once = set(replacements)
        if self.rule_out_stand_ins:
            for stand_in in KIND_STAND_INS[word.kind]:
                known = caption_words().get(stand_in)
                for text in (stand_in, known.plural if known is not None else plural(stand_in)):
                    if text in vocabulary and vocabulary.token_id(text) not in direct:
                        once.add(vocabulary.token_id(text))
        constraint = Constraint(
            token_ids=tuple(sorted(direct | set(replacements))),
            once_ids=tuple(sorted(once)),
            within=self.subject_within if word.kind in self.subject_kinds else None,
        )
        return _Plan(constraint, replacements)

    @torch.inference_mode()
    def read(self, regions: torch.Tensor, guide: bool = True) -> list[ImageGuidance]:
        """Classify (B, R, D) regions; with ``guide``, also pick each image's word and constraint."""
        probs = torch.softmax(self.classify(regions).float(), dim=-1).cpu()
        top = probs.topk(self.top_k, dim=-1)
        word_probs = torch.zeros(probs.size(0), len(self._words) + 1)
        word_probs.index_add_(1, self._category_word, probs)
        table = imagenet_table()
        readings = []
        for row in range(probs.size(0)):
            categories = top.indices[row].tolist()
            labels = tuple(
                Label(self._names[c], table[c][1], float(p))
                for p, c in zip(top.values[row].tolist(), categories)
            )
            # The top category decides the word: a photo whose best guess is a jersey is of a
            # person, however much the 120 dog breeds add up to.
            column = int(self._category_word[categories[0]])
            if column == len(self._words):
                readings.append(ImageGuidance(labels, None, 0.0, None))
                continue
            word = caption_words()[self._words[column]]
            confidence = float(word_probs[row, column])
            if not guide or confidence < self.threshold:
                readings.append(ImageGuidance(labels, None, confidence, None))
                continue
            plan = self.plan(word)
            constraint = None if plan is None else plan.constraint
            if constraint is not None and confidence >= self.trust:
                constraint = dataclasses.replace(constraint, margin=math.inf)
            readings.append(ImageGuidance(labels, word, confidence, constraint))
        return readings

    def caption_words(self, decoded: DecodedCaption, reading: ImageGuidance | None) -> list[str]:
        """The caption's words, with the guiding word written where its stand-in was decoded.

        One entry per decoded token (so attention maps still line up); a phrase such as
        "polar bear" stays one entry.
        """
        words = self.vocabulary.decode(decoded.token_ids)
        position = decoded.constraint_position
        if reading is None or reading.word is None or not decoded.constraint_met or position is None:
            return words
        plan = self.plan(reading.word)
        replacement = None if plan is None else plan.replacements.get(decoded.token_ids[position])
        if replacement is None:
            return words
        words[position] = replacement
        return fix_article(words, position)

    @staticmethod
    def guided_by(decoded: DecodedCaption, reading: ImageGuidance | None) -> str | None:
        """The guiding word when the caption names it, else None."""
        if reading is None or reading.word is None or not decoded.constraint_met:
            return None
        return reading.word.text
