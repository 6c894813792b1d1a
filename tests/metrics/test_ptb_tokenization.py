"""The pure-Python PTB tokenizer against Stanford's Java PTBTokenizer as pycocoevalcap runs it."""

from __future__ import annotations

import pytest

from captioner.metrics.tokenizer import PTBTokenizer, tokenize_captions
from captioner.tokenization import ptb_tokenize, ptb_tokenize_lines

# Expected tokens came from the Java PTBTokenizer 3.4.1 shipped with pycocoevalcap 1.2
# (``-preserveLines -lowerCase``, each caption alone as the last line of its batch), after
# pycocoevalcap's PUNCTUATIONS filter.
HAND_WRITTEN = [
    ("A dog can't catch the frisbee (it's red).",
     ["a", "dog", "ca", "n't", "catch", "the", "frisbee", "-lrb-", "it", "'s", "red", "-rrb-"]),
    ("Two men, one in a t-shirt, play rock'n'roll.",
     ["two", "men", "one", "in", "a", "t-shirt", "play", "rock", "'n'", "roll"]),
    ("The U.S. flag is waving. The end",
     ["the", "u.s.", "flag", "is", "waving", "the", "end"]),
    ("He's gonna jump off the 3-year-old's bike!",
     ["he", "'s", "gon", "na", "jump", "off", "the", "3-year-old", "'s", "bike"]),
    ("A man sits on a bench at 5:30 p.m. near St. Paul's.",
     ["a", "man", "sits", "on", "a", "bench", "at", "5:30", "p.m.", "near", "st.", "paul", "'s"]),
    ('"Look!" she said; the boy\'s dog barked...',
     ["look", "she", "said", "the", "boy", "'s", "dog", "barked"]),
    ("A woman holds a sign that says :) and =D",
     ["a", "woman", "holds", "a", "sign", "that", "says", ":-rrb-", "and", "=", "d"]),
    ("Dogs' toys cost $5 or 1,000 yen [approx.] {maybe}",
     ["dogs", "toys", "cost", "$", "5", "or", "1,000", "yen", "-lsb-", "approx", "-rsb-",
      "-lcb-", "maybe", "-rcb-"]),
    ("The kids cannot wait -- they wanna go",
     ["the", "kids", "can", "not", "wait", "they", "wan", "na", "go"]),
    ("A sign reads <b>SALE</b> & 50% off",
     ["a", "sign", "reads", "<b>", "sale", "</b>", "&", "50", "%", "off"]),
    ("Visit www.example.com or mail me@example.com",
     ["visit", "www.example.com", "or", "mail", "me@example.com"]),
    ("Hmm . . . what?! No way", ["hmm", "what", "?!", "no", "way"]),
    ("A man in a Mr. Potato Head costume vs. a kid",
     ["a", "man", "in", "a", "mr.", "potato", "head", "costume", "vs.", "a", "kid"]),
    ("The photo (taken 1/2/2003) shows \u00bd of a pie",
     ["the", "photo", "-lrb-", "taken", "1/2/2003", "-rrb-", "shows", "1/2", "of", "a", "pie"]),
    ("I'm sure you're right , they'll come",
     ["i", "'m", "sure", "you", "'re", "right", "they", "'ll", "come"]),
    ("A caf\u00e9 with na\u00efve art \u2014 \u201cnice\u201d",
     ["a", "caf\u00e9", "with", "na\u00efve", "art", "nice"]),
]


@pytest.mark.parametrize(("caption", "expected"), HAND_WRITTEN, ids=[c[:30] for c, _ in HAND_WRITTEN])
def test_hand_written_captions_match_java(caption: str, expected: list[str]) -> None:
    assert ptb_tokenize(caption) == expected


def test_final_abbreviation_depends_on_the_next_caption_as_in_a_java_batch() -> None:
    # Java PTBTokenizer 3.4.1: "x e." followed by a line starting "A " splits off the period.
    assert ptb_tokenize_lines(["x e.", "A dog"]) == [["x", "e"], ["a", "dog"]]
    assert ptb_tokenize_lines(["x e.", "a dog"]) == [["x", "e."], ["a", "dog"]]
    assert ptb_tokenize("x e.") == ["x", "e."]


def test_empty_and_punctuation_only_captions_have_no_tokens() -> None:
    assert ptb_tokenize("") == []
    assert ptb_tokenize(" ... ; -- ") == []
    assert ptb_tokenize_lines(["a dog", "", "?!", "cat"]) == [["a", "dog"], [], ["?!"], ["cat"]]


def test_line_breaks_inside_a_caption_are_spaces() -> None:
    # pycocoevalcap replaces "\n" by a space; "\r" would shift its output lines, we keep alignment.
    assert ptb_tokenize_lines(["a\nred dog", "x\r\ny"]) == [["a", "red", "dog"], ["x", "y"]]


def test_tokenize_captions_keeps_pycocoevalcap_shape() -> None:
    captions = {7: [{"caption": "A Dog."}, "Two cats, sleeping."], 3: ["A bird!"], 9: []}
    expected = {7: ["a dog", "two cats sleeping"], 3: ["a bird"]}
    assert tokenize_captions(captions) == expected
    assert PTBTokenizer().tokenize(captions) == expected


def test_matches_java_ptbtokenizer_on_real_captions(
    java: None, flickr8k_captions: dict[str, list[str]], flickr8k_dev_ids: list[str]
) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as JavaPTBTokenizer

    # ~500 real captions plus the hand-written ones, in one pycocoevalcap batch (one JVM start).
    captions = {name: flickr8k_captions[name] for name in flickr8k_dev_ids[:100]}
    captions.update({f"hand{i}": [caption] for i, (caption, _) in enumerate(HAND_WRITTEN)})
    as_annotations = {key: [{"caption": c} for c in values] for key, values in captions.items()}
    assert tokenize_captions(captions) == JavaPTBTokenizer().tokenize(as_annotations)
