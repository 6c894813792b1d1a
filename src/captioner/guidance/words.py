"""ImageNet categories -> plain caption words, and the bits of English that substitution needs.

Owns the two hand-written tables in ``data/`` and reading them:

- ``imagenet_words.tsv``: each of the 1,000 ImageNet-1k categories (in logit order, with the
  name torchvision ships) -> the word a person writing a caption would use. The rules it was
  written by: the everyday name of the thing, not the taxonomy (120 dog breeds -> "dog", the
  five domestic cats -> "cat", "ox" -> "cow", "ram" and "bighorn" -> "sheep", "espresso" ->
  "coffee", obscure birds -> "bird" but owls, eagles, parrots, swans... by name); a word that
  reads as something else in a caption is avoided ("crane" the bird -> "bird", "cricket" and
  "fly" the insects -> "insect", "kite" the bird -> "bird"); and a category that is worn by the
  photo's subject, not the subject itself, is ``-`` (no word: jerseys, swimming trunks, suits,
  sunglasses, seat belts, helmets, masks, shoes, hats, jewellery, ties). A few worn things name
  their wearer instead, because the wearer is what the photo shows: "military uniform" ->
  "soldier", "ski" -> "skier", "muzzle" -> "dog", "ballplayer" -> "player".
- ``caption_words.tsv``: each of those words -> its *kind* (which in-vocabulary stand-in a model
  decodes it as when the word is not in its vocabulary; ``KIND_STAND_INS``), its plural where
  English is irregular, and other words that also count as naming it ("puppy" for "dog").

Knows nothing about tensors, models or decoding.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

#: Stand-in words per kind, best first; a model decodes an unknown word as the first of these
#: that its vocabulary has (Hendricks et al. 2016, "Deep Compositional Captioning": a novel
#: word borrows the weights of a known word of the same kind).
KIND_STAND_INS: dict[str, tuple[str, ...]] = {
    "animal": ("animal", "dog"),
    "bird": ("bird", "animal"),
    "fish": ("fish", "animal"),
    "sea creature": ("animal", "fish"),
    "insect": ("insect", "bug", "animal"),
    "person": ("person", "man"),
    "fruit": ("fruit", "food"),
    "vegetable": ("food",),
    "food": ("food",),
    "drink": ("drink", "beverage"),
    "plant": ("plant", "flower"),
    "building": ("building", "structure"),
    "structure": ("structure", "building"),
    "place": ("area", "place"),
    "vehicle": ("vehicle", "car"),
    "boat": ("boat",),
    "aircraft": ("airplane", "plane"),
    "instrument": ("instrument", "guitar"),
    "furniture": ("furniture", "table"),
    "container": ("container", "box", "bucket"),
    "ball": ("ball",),
    "tool": ("tool", "object"),
    "device": ("device", "machine", "object"),
    "object": ("object", "item", "toy"),
}

#: Words that are spelt with a leading vowel but said with a consonant, and the reverse.
_A_BEFORE = ("uni", "use", "usu", "uti", "eu", "one", "once", "ufo", "ewe")
_AN_BEFORE = ("hour", "honest", "honour", "honor", "heir")


@dataclass(frozen=True)
class CaptionWord:
    """A caption word that ImageNet categories map to."""

    text: str
    """One word or a short phrase ("dog", "polar bear")."""
    kind: str
    """A key of ``KIND_STAND_INS``."""
    plural: str
    also: tuple[str, ...] = ()
    """Other words that name the same thing ("puppy" for "dog")."""


def _data_lines(name: str) -> list[list[str]]:
    text = resources.files("captioner.guidance").joinpath("data", name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@functools.cache
def imagenet_table() -> tuple[tuple[str, str | None], ...]:
    """The 1,000 ImageNet categories in logit order: (torchvision name, caption word or None)."""
    rows = []
    for position, (index, name, word) in enumerate(_data_lines("imagenet_words.tsv")):
        if int(index) != position:
            raise ValueError(f"imagenet_words.tsv: row {position} has index {index}")
        rows.append((name, None if word == "-" else word))
    return tuple(rows)


@functools.cache
def caption_words() -> dict[str, CaptionWord]:
    """Every word of ``imagenet_table()``, by its text."""
    words = {}
    for text, kind, plural_form, also in _data_lines("caption_words.tsv"):
        if kind not in KIND_STAND_INS:
            raise ValueError(f"caption_words.tsv: {text!r} has unknown kind {kind!r}")
        words[text] = CaptionWord(text, kind, plural_form or plural(text), tuple(also.split()))
    return words


def imagenet_word(category: int) -> CaptionWord | None:
    """The caption word of ImageNet category ``category``, or None when it is not a main object."""
    word = imagenet_table()[category][1]
    return None if word is None else caption_words()[word]


def plural(text: str) -> str:
    """Regular English plural of a word or of a phrase's last word."""
    head, _, last = text.rpartition(" ")
    if last.endswith(("s", "x", "z", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in tuple("aeiou"):
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}" if head else last


def indefinite_article(word: str) -> str:
    """"a" or "an" for the sound ``word`` starts with (spelling rules and common exceptions)."""
    lowered = word.lower()
    if lowered.startswith(_AN_BEFORE):
        return "an"
    if lowered.startswith(_A_BEFORE):
        return "a"
    return "an" if lowered[:1] in tuple("aeiou") else "a"


def fix_article(words: list[str], position: int) -> list[str]:
    """Make an "a"/"an" right before ``words[position]`` agree with it."""
    if position > 0 and words[position - 1] in ("a", "an"):
        words = list(words)
        words[position - 1] = indefinite_article(words[position])
    return words
