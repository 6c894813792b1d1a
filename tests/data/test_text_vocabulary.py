"""Caption tokenization and the vocabulary: ids, encode/decode, save/load round trips."""

from __future__ import annotations

import json

import pytest

from captioner.data.text import Vocabulary, tokenize_caption
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
