"""The ImageNet -> caption word tables and the English helpers."""

import pytest

from captioner.encoders.efficientnet_lite import imagenet_categories
from captioner.guidance.words import (
    KIND_STAND_INS,
    caption_words,
    fix_article,
    imagenet_table,
    imagenet_word,
    indefinite_article,
    plural,
)


def test_all_1000_categories_are_mapped_in_torchvision_order():
    table = imagenet_table()
    assert [name for name, _ in table] == imagenet_categories()
    words = caption_words()
    for name, word in table:
        assert word is None or word in words, (name, word)
    assert {word for _, word in table if word} == set(words)


def word_of(name: str) -> str | None:
    index = imagenet_categories().index(name)
    word = imagenet_word(index)
    return None if word is None else word.text


@pytest.mark.parametrize(
    ("name", "word"),
    [
        ("tabby", "cat"), ("Egyptian cat", "cat"), ("Persian cat", "cat"),
        ("espresso", "coffee"), ("coffee mug", "mug"), ("cup", "cup"),
        ("German shepherd", "dog"), ("golden retriever", "dog"), ("Chihuahua", "dog"),
        ("ox", "cow"), ("ram", "sheep"), ("hen", "chicken"), ("goose", "goose"),
        ("macaw", "parrot"), ("ice bear", "polar bear"), ("lesser panda", "red panda"),
        ("missile", "rocket"), ("mountain bike", "bike"), ("seashore", "beach"),
        ("alp", "mountain"), ("frying pan", "pan"), ("ski", "skier"), ("crane bird", "bird"),
    ],
)
def test_known_categories_get_the_plain_word(name, word):
    assert word_of(name) == word


@pytest.mark.parametrize(
    "name", ["jersey", "swimming trunks", "suit", "sunglasses", "seat belt", "sweatshirt", "bikini", "web site"]
)
def test_worn_things_are_not_main_objects(name):
    assert word_of(name) is None


def test_every_dog_breed_is_a_dog_and_every_domestic_cat_a_cat():
    categories = imagenet_categories()
    assert {word_of(categories[i]) for i in range(151, 269)} == {"dog"}
    assert {word_of(categories[i]) for i in range(281, 286)} == {"cat"}


def test_every_kind_has_stand_ins_and_words_have_no_stray_spaces():
    for word in caption_words().values():
        assert KIND_STAND_INS[word.kind]
        assert word.text == word.text.strip().lower() and "  " not in word.text
        assert all(other == other.strip() and " " not in other for other in word.also)


@pytest.mark.parametrize(
    ("word", "expected"),
    [("dog", "dogs"), ("bus", "buses"), ("box", "boxes"), ("butterfly", "butterflies"), ("monkey", "monkeys"),
     ("polar bear", "polar bears"), ("church", "churches")],
)
def test_regular_plurals(word, expected):
    assert plural(word) == expected


def test_irregular_plurals_come_from_the_table():
    words = caption_words()
    assert words["goose"].plural == "geese"
    assert words["sheep"].plural == "sheep"
    assert words["knife"].plural == "knives"
    assert words["mouse"].plural == "mice"


@pytest.mark.parametrize(
    ("word", "article"),
    [("iguana", "an"), ("koala", "a"), ("unicycle", "a"), ("hourglass", "an"), ("owl", "an"), ("european", "a")],
)
def test_indefinite_article(word, article):
    assert indefinite_article(word) == article


def test_fix_article_only_touches_the_article_before_the_word():
    assert fix_article(["a", "dog", "and", "a", "owl"], 4) == ["a", "dog", "and", "an", "owl"]
    assert fix_article(["an", "koala", "in", "an", "tree"], 1) == ["a", "koala", "in", "an", "tree"]
    assert fix_article(["two", "owls"], 1) == ["two", "owls"]
    assert fix_article(["owl"], 0) == ["owl"]
