"""Five true captions per scene, in a small grammar with varied sentence shapes.

Owns: the sentences the scenes dataset teaches. Every noun phrase names exactly the set of
objects it matches (so "two green triangles" means there are exactly two, and "a red circle"
means exactly one), relations are written only between single objects and only along the
dominant axis (plus "next to" for touching cells), and positions only for single objects, so
every caption is true under the checker's definitions. Vocabulary: about 50 words.
Must not know about drawing or files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from captioner.data.scenes.truth import (
    GRID,
    PLURALS,
    RELATION_PHRASES,
    SceneObject,
    SceneTruth,
    relation_holds,
)

NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
_CELL_PHRASES = {
    (0, 0): ("in the top left corner", "in the top left"),
    (0, 1): ("at the top",),
    (0, 2): ("in the top right corner", "in the top right"),
    (1, 0): ("on the left",),
    (1, 1): ("in the center", "in the middle"),
    (1, 2): ("on the right",),
    (2, 0): ("in the bottom left corner", "in the bottom left"),
    (2, 1): ("at the bottom",),
    (2, 2): ("in the bottom right corner", "in the bottom right"),
}
assert GRID == 3, "position phrases are written for a 3x3 grid"

CAPTIONS_PER_IMAGE = 5
_MAX_ATTEMPTS = 200


@dataclass(frozen=True)
class Referent:
    """A phrase's attributes and exactly the objects (indices) it matches in its scene."""

    shape: str
    colour: str | None
    size: str | None
    members: tuple[int, ...]

    def words(self) -> str:
        count = len(self.members)
        nouns = [w for w in (self.size, self.colour) if w]
        noun = PLURALS[self.shape] if count > 1 else self.shape
        head = " ".join([*nouns, noun])
        if count > 1:
            return f"{NUMBER_WORDS[count]} {head}"
        return f"{'an' if head[0] in 'aeiou' else 'a'} {head}"

    @property
    def is_single(self) -> bool:
        return len(self.members) == 1


def referents(scene: SceneTruth) -> list[Referent]:
    """Every (shape, optional colour, optional size) description with its exact match set."""
    found: dict[tuple[str, str | None, str | None], Referent] = {}
    for obj in scene.objects:
        for colour in (None, obj.colour):
            for size in (None, obj.size):
                key = (obj.shape, colour, size)
                if key not in found:
                    members = tuple(
                        i for i, o in enumerate(scene.objects)
                        if o.shape == obj.shape
                        and (colour is None or o.colour == colour)
                        and (size is None or o.size == size)
                    )
                    found[key] = Referent(obj.shape, colour, size, members)
    return list(found.values())


def _dominant_relations(a: SceneObject, b: SceneObject) -> list[str]:
    """Relations a person would say: along the axis of larger distance (both when equal)."""
    d_row, d_col = abs(a.row - b.row), abs(a.col - b.col)
    chosen = []
    if d_col >= d_row:
        chosen += [r for r in ("left_of", "right_of") if relation_holds(a, r, b)]
    if d_row >= d_col:
        chosen += [r for r in ("above", "below") if relation_holds(a, r, b)]
    if relation_holds(a, "next_to", b):
        chosen.append("next_to")
    return chosen


def _there(referent: Referent, rest: str) -> str:
    verb = "is" if referent.is_single else "are"
    return f"there {verb} {rest}"


def _join(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


class _Writer:
    def __init__(self, scene: SceneTruth, rng: np.random.Generator) -> None:
        self.scene = scene
        self.rng = rng
        self.all_referents = referents(scene)
        self.singles = [r for r in self.all_referents if r.is_single]
        # Colour+shape groups: the coarsest description that always names whole groups.
        self.groups = sorted(
            (r for r in self.all_referents if r.colour is not None and r.size is None),
            key=lambda r: r.members,
        )

    def pick(self, items: list):  # type: ignore[no-untyped-def]
        return items[int(self.rng.integers(len(items)))]

    def chance(self, probability: float) -> bool:
        return bool(self.rng.random() < probability)

    def group_phrase(self, group: Referent) -> str:
        sizes = {self.scene.objects[i].size for i in group.members}
        if len(sizes) == 1 and self.chance(0.5):
            group = Referent(group.shape, group.colour, sizes.pop(), group.members)
        return group.words()

    def complete(self) -> str:
        """Mentions every object: a list of groups, or a relation between exactly two objects."""
        groups = self.groups
        if len(groups) == 2 and all(g.is_single for g in groups) and self.chance(0.6):
            a, b = (self.scene.objects[g.members[0]] for g in groups)
            relation = self.pick(_dominant_relations(a, b))
            return f"{self.group_phrase(groups[0])} {RELATION_PHRASES[relation]} {self.group_phrase(groups[1])}"
        sentence = _join([self.group_phrase(g) for g in groups])
        return _there(groups[0], sentence) if self.chance(0.35) else sentence

    def phrase(self) -> str:
        return self.pick(self.all_referents).words()

    def there_is(self) -> str:
        referent = self.pick(self.all_referents)
        return _there(referent, referent.words())

    def relation(self) -> str | None:
        pairs = [(a, b) for a in self.singles for b in self.singles if a.members != b.members]
        if not pairs:
            return None
        a, b = self.pick(pairs)
        relations = _dominant_relations(self.scene.objects[a.members[0]], self.scene.objects[b.members[0]])
        return f"{a.words()} {RELATION_PHRASES[self.pick(relations)]} {b.words()}"

    def position(self) -> str | None:
        if not self.singles:
            return None
        referent = self.pick(self.singles)
        obj = self.scene.objects[referent.members[0]]
        sentence = f"{referent.words()} {self.pick(list(_CELL_PHRASES[obj.row, obj.col]))}"
        return _there(referent, sentence) if self.chance(0.3) else sentence

    def total(self) -> str:
        count = len(self.scene.objects)
        noun = "shape" if count == 1 else "shapes"
        sentence = f"{NUMBER_WORDS[count]} {noun}"
        return f"there {'is' if count == 1 else 'are'} {sentence}" if self.chance(0.6) else sentence

    def pair(self) -> str | None:
        disjoint = [
            (a, b) for a in self.all_referents for b in self.all_referents
            if not set(a.members) & set(b.members) and a.members < b.members
        ]
        if not disjoint:
            return None
        a, b = self.pick(disjoint)
        return f"{a.words()} and {b.words()}"


def true_captions(scene: SceneTruth, rng: np.random.Generator,
                  count: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """``count`` different true captions; the first two always mention every object.

    Two complete descriptions (in different words where the scene allows) give the references a
    shared core, as people's captions of a photo share its main subject; without them the five
    captions often named disjoint parts of the scene and agreed with each other so little
    (leave-one-out CIDEr-D about 1.4) that no single caption could match them.
    """
    writer = _Writer(scene, rng)
    templates = [writer.phrase, writer.there_is, writer.relation, writer.relation,
                 writer.position, writer.position, writer.total, writer.pair]
    captions = [writer.complete()]
    for attempt in range(_MAX_ATTEMPTS):
        if len(captions) == count:
            break
        second_complete = len(captions) == 1 and attempt < _MAX_ATTEMPTS // 2
        candidate = writer.complete() if second_complete else writer.pick(templates)()
        if candidate is not None and candidate not in captions:
            captions.append(candidate)
    if len(captions) < count:
        raise RuntimeError(f"could not write {count} different captions for {scene}")
    return captions
