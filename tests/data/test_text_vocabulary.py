"""Caption tokenization and the vocabulary: ids, encode/decode, save/load round trips."""

from __future__ import annotations

import json

import pytest

from captioner.data.text import CaptionEndings, Vocabulary, tokenize_caption
from captioner.errors import CheckpointError


def test_tokenize_caption_is_the_coco_evaluation_tokenization():
    # Known PTB behaviour: lower-case, punctuation dropped, contractions split.
    assert tokenize_caption("A dog can't catch the Frisbee, it's red.") == [
        "a", "dog", "ca", "n't", "catch", "the", "frisbee", "it", "'s", "red"]


def test_special_token_ids():
    vocabulary = Vocabulary.build([["a"]], min_count=1)
    assert (vocabulary.pad_id, vocabulary.start_id, vocabulary.end_id, vocabulary.unk_id) == (0, 1, 2, 3)
    assert vocabulary.tokens[:4] == ["<pad>", "<start>", "<end>", "<unk>"]


def test_build_orders_by_count_then_alphabet_and_applies_min_count():
    token_lists = [["b", "a", "c"], ["a", "b", "d"], ["a", "z"], ["z", "b"]]
    vocabulary = Vocabulary.build(token_lists, min_count=2)
    # a: 3, b: 3, z: 2 kept; c, d: 1 dropped
    assert vocabulary.tokens[4:] == ["a", "b", "z"]
    assert len(vocabulary) == 7
    assert "c" not in vocabulary and "a" in vocabulary


def test_build_ignores_special_tokens_in_text():
    vocabulary = Vocabulary.build([["<unk>", "x"], ["<unk>", "x"]], min_count=1)
    assert vocabulary.tokens == ["<pad>", "<start>", "<end>", "<unk>", "x"]


def test_encode_adds_start_end_and_maps_unknown_words():
    vocabulary = Vocabulary.build([["a", "dog"]], min_count=1)
    a, dog = vocabulary.token_id("a"), vocabulary.token_id("dog")
    assert vocabulary.encode(["a", "dog", "zebra"]) == [1, a, dog, 3, 2]


def test_encode_truncates_words_but_keeps_end():
    vocabulary = Vocabulary.build([["a", "b", "c"]], min_count=1)
    ids = vocabulary.encode(["a", "b", "c"], max_length=2)
    assert ids == [1, vocabulary.token_id("a"), vocabulary.token_id("b"), 2]
    assert vocabulary.encode([], max_length=2) == [1, 2]


def test_decode_stops_at_end_and_drops_start_and_pad():
    vocabulary = Vocabulary.build([["a", "dog"]], min_count=1)
    a, dog = vocabulary.token_id("a"), vocabulary.token_id("dog")
    assert vocabulary.decode([1, a, 0, dog, 3, 2, a, a]) == ["a", "dog", "<unk>"]


def test_encode_decode_round_trip_on_real_captions():
    captions = ["A man rides a horse.", "Two dogs play in the snow!", "A man and two dogs."]
    token_lists = [tokenize_caption(c) for c in captions]
    vocabulary = Vocabulary.build(token_lists, min_count=1)
    for tokens in token_lists:
        assert vocabulary.decode(vocabulary.encode(tokens)) == tokens


def test_save_load_round_trip(tmp_path):
    vocabulary = Vocabulary.build([["x", "y", "y"], ["y", "w"]], min_count=1)
    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    data = json.loads(path.read_text())
    assert data["tokens"] == vocabulary.tokens and data["min_count"] == 1
    assert data["special"] == {"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3}
    loaded = Vocabulary.load(path)
    assert loaded == vocabulary and loaded.min_count == 1
    assert loaded.encode(["y", "w"]) == vocabulary.encode(["y", "w"])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("{not json", "is not valid JSON"),
        ('{"tokens": "abc"}', "expected"),
        ('{"tokens": ["<start>", "<pad>", "<end>", "<unk>", "a"]}', "special tokens"),
        ('{"tokens": ["<pad>", "<start>", "<end>", "<unk>", "a", "a"]}', "unique"),
    ],
)
def test_load_errors_are_one_line_checkpoint_errors(tmp_path, content, expected):
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(CheckpointError, match=expected) as caught:
        Vocabulary.load(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        Vocabulary.load(tmp_path / "missing.json")


# Counted by hand at min_count 2, max_rate 0.3 ("the dog" is seen once: too rare to judge):
#   a 10x, never last -> words; man 2x, in 2x, never last -> words; red 8x, last 2x (< 2.4) -> words
#   "in red" 2x, last 2x -> allowed although "red" is in words
#   dog 3x, last 1x (>= 0.9) -> not in words; but "a dog" 2x, never last -> pairs
ENDING_CORPUS = (
    [["a", "man", "in", "red"]] * 2 + [["a", "red", "ball"]] * 6 + [["a", "dog", "runs"]] * 2 + [["the", "dog"]]
)


def test_caption_endings_count_words_pairs_and_exceptions():
    words = ["a", "man", "in", "red", "ball", "dog", "runs", "the"]
    endings = CaptionEndings.count(ENDING_CORPUS, words, min_count=2, max_rate=0.3)
    assert endings.words == {"a", "man", "in", "red"}
    assert endings.pairs == {("a", "dog")}
    assert endings.allowed_pairs == {("in", "red")}
    assert endings.dangling("a", "red") and endings.dangling("a", "dog") and endings.dangling("<start>", "a")
    assert not endings.dangling("in", "red")
    assert not endings.dangling("the", "dog")  # the pair is too rare to judge, and "dog" ends captions
    assert not endings.dangling("red", "ball")
    # Only the vocabulary's words are judged.
    assert "man" not in CaptionEndings.count(ENDING_CORPUS, ["a", "in", "red"], min_count=2, max_rate=0.3).words


def test_build_counts_endings_and_they_survive_save_and_load(tmp_path):
    vocabulary = Vocabulary.build(
        [["a", "dog", "runs", "on", "the", "grass"]] * 30 + [["a", "dog", "sleeps"]] * 30, min_count=5
    )
    assert vocabulary.endings is not None
    assert {"a", "on", "the"} <= vocabulary.endings.words
    assert not vocabulary.endings.words & {"grass", "sleeps"}
    path = tmp_path / "vocab.json"
    vocabulary.save(path)
    loaded = Vocabulary.load(path)
    assert loaded.endings == vocabulary.endings


def test_vocabulary_written_before_endings_loads_without_them(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"tokens": ["<pad>", "<start>", "<end>", "<unk>", "dog"], "min_count": 1}))
    assert Vocabulary.load(path).endings is None


@pytest.mark.parametrize("endings, expected", [
    ({"words": "a"}, "endings.words must be a list of words"),
    ({"pairs": ["a"]}, 'endings.pairs must be a list of "word word" pairs'),
    ({"allowed_pairs": [["in", "red"]]}, 'endings.allowed_pairs must be a list of "word word" pairs'),
    ([], "endings must be an object"),
])
def test_malformed_endings_are_one_line_checkpoint_errors(tmp_path, endings, expected):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"tokens": ["<pad>", "<start>", "<end>", "<unk>", "a"], "endings": endings}))
    with pytest.raises(CheckpointError) as error:
        Vocabulary.load(path)
    assert expected in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)
