"""Fixtures for the caption-metric tests: the real Flickr8k captions in ``<repo>/../shared``
(tests using them skip when absent), a small self-contained reference set, and the Java check."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import pytest

FLICKR8K = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "flickr8k"

# Eight made-up images with five reference captions each, written for these tests in the style
# of Flickr8k / COCO captions (mixed case, final periods, commas, apostrophes, a hyphen).
SMALL_REFERENCES: dict[int, list[str]] = {
    1: ["A black dog runs across the green grass.",
        "A dog is running on a lawn.",
        "The black dog sprints through a grassy field .",
        "A dog running outside on the grass",
        "A black and white dog plays in a park."],
    2: ["Two children play soccer on a field.",
        "Kids are kicking a ball in the park.",
        "Two young boys chase a soccer ball .",
        "A pair of children playing football outdoors",
        "Children run after a ball on the grass."],
    3: ["A man rides a bicycle down a city street.",
        "A cyclist in a red helmet rides through traffic.",
        "A person on a bike in the street .",
        "A man is riding his bike past parked cars",
        "The bicyclist pedals along a busy road."],
    4: ["A woman is sitting on a bench reading a book.",
        "A lady reads on a park bench.",
        "A woman in a blue coat reads a novel outdoors .",
        "Someone sits on a wooden bench with a book",
        "A woman reading while sitting on a bench."],
    5: ["A surfer rides a large wave in the ocean.",
        "A man on a surfboard catches a wave .",
        "Someone is surfing on a blue wave",
        "A surfer in a black wetsuit rides the surf.",
        "The man surfs a big wave."],
    6: ["A little girl in a pink dress is climbing stairs.",
        "A child goes up the steps of a wooden house .",
        "A girl climbing into a playhouse",
        "A little girl in pink walks up a staircase.",
        "The small girl's dress is pink; she climbs the stairs."],
    7: ["Two dogs are fighting over a stick.",
        "A brown dog and a white dog play tug-of-war .",
        "Dogs pulling on a stick in the snow",
        "Two dogs play with a stick outside.",
        "The dogs can't share the stick."],
    8: ["A crowd watches a street performer.",
        "People gather around a man juggling in the street .",
        "A juggler entertains a crowd outdoors",
        "A street performer juggles for an audience.",
        "Spectators watch a man perform tricks on the sidewalk."],
}


def small_candidates() -> dict[int, str]:
    """One candidate of each kind the parity tests need, on the small reference set."""
    every_reference = " ".join(c for captions in SMALL_REFERENCES.values() for c in captions)
    return {
        1: SMALL_REFERENCES[1][1],  # one of the image's own references
        2: SMALL_REFERENCES[3][0],  # another image's caption
        3: "a",  # almost empty
        4: every_reference,  # very long (over 64 tokens: the big-integer LCS path)
        5: "a a a a a wave wave wave the the",  # repeated words: clipping
        6: "",  # empty
        7: "Two dogs are playing with a stick in the snow.",
        8: "A man juggles, and a crowd watches...",
    }


@pytest.fixture(scope="session")
def small_references() -> dict[int, list[str]]:
    return SMALL_REFERENCES


@pytest.fixture(name="small_candidates", scope="session")
def small_candidates_fixture() -> dict[int, str]:
    return small_candidates()


@pytest.fixture(scope="session")
def flickr8k_captions() -> dict[str, list[str]]:
    """Flickr8k captions by image file name, in file order."""
    token_file = FLICKR8K / "Flickr8k.token.txt"
    if not token_file.is_file():
        pytest.skip(f"needs ../shared/datasets/flickr8k: {token_file} not found")
    captions: dict[str, list[str]] = collections.defaultdict(list)
    for line in token_file.read_text(encoding="utf-8").splitlines():
        key, caption = line.split("\t", 1)
        captions[key.split("#")[0]].append(caption)
    return dict(captions)


@pytest.fixture(scope="session")
def flickr8k_dev_ids(flickr8k_captions: dict[str, list[str]]) -> list[str]:
    names = (FLICKR8K / "Flickr_8k.devImages.txt").read_text().split()
    return [name for name in names if name in flickr8k_captions]


@pytest.fixture()
def java() -> None:
    """Skip unless Java and pycocoevalcap's tokenizer jar are available."""
    pytest.importorskip("pycocoevalcap", reason="needs pycocoevalcap (a test dependency)")
    if shutil.which("java") is None:
        pytest.skip("needs java on PATH to run pycocoevalcap's Java PTBTokenizer")
