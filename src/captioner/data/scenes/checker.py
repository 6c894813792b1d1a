"""Is a generated caption of a scenes picture true? Grounded precision against the ground truth.

Owns: parsing a caption with the scenes grammar (noun phrases = optional count/size/colour +
shape; relations between two noun phrases; positions such as "in the top left corner"; totals
such as "three shapes") and checking every claim against ``SceneTruth``. Each mentioned shape,
colour, size, count, position and relation is one check; precision = correct / checked.

Meanings (shared with the caption writer through ``truth``): "a/an/the X" claims at least one X;
"one/two/three/four X" claims exactly that many; a bare plural claims at least two; a relation
holds when some object of the first phrase (every one, for a plural) stands in it to some object
of the second. Words outside the grammar are ignored. Must not know about models or metrics.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from captioner.data.scenes.truth import (
    COLOURS,
    PLURALS,
    POSITION_WORDS,
    SceneObject,
    SceneTruth,
    find_scene_truths,
    load_scene_truths,
    position_holds,
    relation_holds,
)

__all__ = [
    "GroundingResult",
    "corpus_grounded_precision",
    "find_scene_truths",
    "grounded_precision",
    "load_scene_truths",
    "parse_caption",
]

_EXISTENTIAL = ("a", "an", "the", "some")
_NUMBERS = {"one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
            "seven": 7, "eight": 8, "nine": 9}
_SIZES = {"small": "small", "little": "small", "tiny": "small", "large": "large", "big": "large"}
_SHAPE_NOUNS: dict[str, tuple[str, bool]] = {
    **{shape: (shape, False) for shape in PLURALS},
    **{plural: (shape, True) for shape, plural in PLURALS.items()},
}
_GENERIC_NOUNS = {"shape": False, "object": False, "thing": False,
                  "shapes": True, "objects": True, "things": True}
_RELATION_PATTERNS: list[tuple[tuple[str, ...], str]] = sorted(
    [
        (("to", "the", "left", "of"), "left_of"),
        (("on", "the", "left", "of"), "left_of"),
        (("left", "of"), "left_of"),
        (("to", "the", "right", "of"), "right_of"),
        (("on", "the", "right", "of"), "right_of"),
        (("right", "of"), "right_of"),
        (("above",), "above"),
        (("over",), "above"),
        (("below",), "below"),
        (("under",), "below"),
        (("beneath",), "below"),
        (("next", "to"), "next_to"),
        (("beside",), "next_to"),
    ],
    key=lambda pattern: -len(pattern[0]),
)
_RELATION_WORDS = {"left_of": "left of", "right_of": "right of", "above": "above",
                   "below": "below", "next_to": "next to"}
_PHRASE_STARTS = frozenset(
    [*_NUMBERS, *_EXISTENTIAL, *_SIZES, *COLOURS, *_SHAPE_NOUNS, *_GENERIC_NOUNS]
)
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class NounPhrase:
    shape: str | None  # None for "shape"/"object"
    colour: str | None
    size: str | None
    number: int | None  # an explicit count word
    plural: bool

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )

    def text(self) -> str:
        words = [str(self.number)] if self.number is not None else []
        noun = self.shape or "shape"
        words += [w for w in (self.size, self.colour) if w] + [noun + ("s" if self.plural else "")]
        return " ".join(words)


@dataclass(frozen=True)
class _Relation:
    relation: str


@dataclass(frozen=True)
class _Position:
    words: frozenset[str]


_Item = NounPhrase | _Relation | _Position


@dataclass
class GroundingResult:
    """``precision`` = ``correct`` / ``checked``; ``errors`` says what was false."""

    precision: float
    checked: int
    correct: int
    errors: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> bool:
        """True when the caption said nothing the checker could verify (precision 0)."""
        return self.checked == 0


def _match_sequence(tokens: list[str], start: int, pattern: tuple[str, ...]) -> bool:
    return tuple(tokens[start:start + len(pattern)]) == pattern


def _parse_noun_phrase(tokens: list[str], start: int) -> tuple[NounPhrase | None, int]:
    """Read ``[count] [size|colour]* noun`` from ``start``; ``None`` if no noun ends it."""
    position = start
    number: int | None = None
    if tokens[position] in _NUMBERS:
        number = _NUMBERS[tokens[position]]
        position += 1
    elif tokens[position] in _EXISTENTIAL:
        position += 1
    size = colour = None
    while position < len(tokens):
        word = tokens[position]
        if word in _SIZES and size is None:
            size = _SIZES[word]
        elif word in COLOURS and colour is None:
            colour = word
        else:
            break
        position += 1
    if position < len(tokens):
        word = tokens[position]
        if word in _SHAPE_NOUNS:
            shape, plural = _SHAPE_NOUNS[word]
            return NounPhrase(shape, colour, size, number, plural), position + 1
        if word in _GENERIC_NOUNS:
            return NounPhrase(None, colour, size, number, _GENERIC_NOUNS[word]), position + 1
    return None, start + 1


def parse_caption(caption: str) -> list[_Item]:
    """The noun phrases, relations and positions of ``caption``, in order."""
    tokens = _WORD.findall(caption.lower())
    items: list[_Item] = []
    index = 0
    while index < len(tokens):
        found = next(
            ((p, r) for p, r in _RELATION_PATTERNS if _match_sequence(tokens, index, p)), None
        )
        if found is not None:
            items.append(_Relation(found[1]))
            index += len(found[0])
            continue
        if tokens[index] in ("in", "at", "on") and index + 1 < len(tokens) and tokens[index + 1] == "the":
            end = index + 2
            while end < len(tokens) and tokens[end] in POSITION_WORDS:
                end += 1
            if end > index + 2 and (end == len(tokens) or tokens[end] != "of"):
                items.append(_Position(frozenset(tokens[index + 2:end])))
                index = end
                continue
        if tokens[index] in _PHRASE_STARTS:
            phrase, index = _parse_noun_phrase(tokens, index)
            if phrase is not None:
                items.append(phrase)
            continue
        index += 1
    return items


class _Tally:
    def __init__(self) -> None:
        self.checked = 0
        self.correct = 0
        self.errors: list[str] = []

    def check(self, holds: bool, error: str) -> None:
        self.checked += 1
        if holds:
            self.correct += 1
        else:
            self.errors.append(error)


def _check_noun_phrase(phrase: NounPhrase, scene: SceneTruth, tally: _Tally) -> None:
    objects = scene.objects
    before = tally.checked
    if phrase.shape is not None:
        tally.check(any(o.shape == phrase.shape for o in objects), f"no {phrase.shape} in the scene")
    noun = phrase.shape or "shape"
    if phrase.colour is not None:
        tally.check(
            any(o.colour == phrase.colour and (phrase.shape is None or o.shape == phrase.shape)
                for o in objects),
            f"no {phrase.colour} {noun} in the scene",
        )
    if phrase.size is not None:
        tally.check(any(phrase.matches(o) for o in objects),
                    f"no {phrase.size} {phrase.colour or ''} {noun} in the scene".replace("  ", " "))
    found = sum(phrase.matches(o) for o in objects)
    if phrase.number is not None:
        tally.check(found == phrase.number,
                    f"'{phrase.text()}': the scene has {found}, not {phrase.number}")
    elif phrase.plural:
        tally.check(found >= 2, f"'{phrase.text()}': the scene has {found}, not several")
    if tally.checked == before:  # "a shape": still a claim that something is there
        tally.check(found >= 1, f"'{phrase.text()}': the scene is empty")


def _relation_holds_for(subject: NounPhrase, relation: str, other: NounPhrase,
                        scene: SceneTruth) -> bool:
    firsts = [o for o in scene.objects if subject.matches(o)]
    seconds = [o for o in scene.objects if other.matches(o)]
    if not firsts or not seconds:
        return False
    related = [any(relation_holds(a, relation, b) for b in seconds) for a in firsts]
    plural = subject.plural or (subject.number or 1) > 1
    return all(related) if plural else any(related)


def grounded_precision(caption: str, scene: SceneTruth) -> GroundingResult:
    """Check every claim of ``caption`` against ``scene``; nothing checkable -> precision 0."""
    tally = _Tally()
    subject: NounPhrase | None = None
    pending: tuple[NounPhrase, str] | None = None
    for item in parse_caption(caption):
        if isinstance(item, NounPhrase):
            _check_noun_phrase(item, scene, tally)
            if pending is not None:
                first, relation = pending
                tally.check(
                    _relation_holds_for(first, relation, item, scene),
                    f"'{first.text()}' is not {_RELATION_WORDS[relation]} '{item.text()}'",
                )
                pending = None
            subject = item
        elif isinstance(item, _Relation):
            pending = (subject, item.relation) if subject is not None else None
        elif isinstance(item, _Position) and subject is not None:
            firsts = [o for o in scene.objects if subject.matches(o)]
            plural = subject.plural or (subject.number or 1) > 1
            verdicts = [position_holds(o, item.words) for o in firsts]
            holds = bool(firsts) and (all(verdicts) if plural else any(verdicts))
            tally.check(holds, f"'{subject.text()}' is not at the {' '.join(sorted(item.words))}")
    if tally.checked == 0:
        return GroundingResult(0.0, 0, 0, [f"nothing checkable in {caption!r}"])
    return GroundingResult(tally.correct / tally.checked, tally.checked, tally.correct, tally.errors)


def corpus_grounded_precision(captions: Mapping[int, str], truths: Mapping[int, SceneTruth]) -> float:
    """Micro-average over captions (total correct / total checked), keyed by image id.

    A caption with nothing checkable counts as one failed check, so saying nothing never helps.
    """
    if not captions:
        raise ValueError("no captions to check")
    missing = [image_id for image_id in captions if image_id not in truths]
    if missing:
        raise ValueError(f"no ground truth for image ids {missing[:5]}; wrong split?")
    correct = checked = 0
    for image_id, caption in captions.items():
        result = grounded_precision(caption, truths[image_id])
        correct += result.correct
        checked += max(result.checked, 1)
    return correct / checked
