"""The guide: classifier scores -> word and constraint -> caption words, with a made-up classifier."""

import math

import pytest
import torch
from torch import nn

from captioner.data.text import Vocabulary
from captioner.decoding import DecodedCaption
from captioner.encoders.efficientnet_lite import imagenet_categories
from captioner.guidance import Guide, region_classifier

CATEGORIES = imagenet_categories()
VOCABULARY = Vocabulary(["a", "an", "the", "dog", "dogs", "puppy", "animal", "animals", "is", "in", "tree",
                         "cat", "kitten", "bird", "birds", "sitting", "two", "ball"])


def logits_for(*pairs: tuple[str, float]) -> torch.Tensor:
    """(1, 1000) logits whose softmax gives each named category its probability (rest spread evenly)."""
    probs = torch.full((1000,), 0.0)
    for name, p in pairs:
        probs[CATEGORIES.index(name)] = p
    rest = 1.0 - float(probs.sum())
    probs[probs == 0] = rest / int((probs == 0).sum())
    return probs.log().unsqueeze(0)


def guide_for(logits: torch.Tensor, **options) -> Guide:
    return Guide(VOCABULARY, lambda regions: logits.expand(regions.size(0), -1), **options)


def ids(*words: str) -> list[int]:
    return [VOCABULARY.token_id(w) for w in words]


def decoded(words: list[str], met: bool | None, position: int | None) -> DecodedCaption:
    return DecodedCaption(ids(*words), -1.0, -1.0, torch.zeros(len(words), 4), True, met, position)


def test_an_unknown_animal_is_decoded_as_its_stand_in_and_written_by_name():
    guide = guide_for(logits_for(("koala", 0.9)))
    (reading,) = guide.read(torch.zeros(1, 4, 8))
    assert reading.word.text == "koala" and reading.confidence == pytest.approx(0.9, abs=1e-3)
    assert reading.labels[0].label == "koala" and reading.labels[0].word == "koala"
    assert len(reading.labels) == 5
    assert set(reading.constraint.token_ids) == set(ids("animal", "animals"))
    assert set(reading.constraint.once_ids) == set(ids("animal", "animals"))
    caption = decoded(["an", "animal", "is", "in", "a", "tree"], True, 1)
    assert guide.caption_words(caption, reading) == ["a", "koala", "is", "in", "a", "tree"]
    assert Guide.guided_by(caption, reading) == "koala"
    two = decoded(["two", "animals", "sitting"], True, 1)
    assert guide.caption_words(two, reading) == ["two", "koalas", "sitting"]


def test_a_known_word_is_constrained_directly_with_its_plural_and_other_names():
    guide = guide_for(logits_for(("tabby", 0.5), ("Egyptian cat", 0.3)))
    (reading,) = guide.read(torch.zeros(1, 4, 8))
    assert reading.word.text == "cat" and reading.confidence == pytest.approx(0.8, abs=1e-3)
    assert set(reading.constraint.token_ids) == set(ids("cat", "kitten"))
    assert reading.constraint.once_ids == ()
    caption = decoded(["a", "kitten", "in", "a", "tree"], True, 1)
    assert guide.caption_words(caption, reading) == ["a", "kitten", "in", "a", "tree"]


def test_dog_breeds_add_up_but_the_top_category_decides():
    breeds = [("German shepherd", 0.1), ("malinois", 0.09), ("kelpie", 0.08), ("collie", 0.08)]
    (reading,) = guide_for(logits_for(*breeds), threshold=0.3).read(torch.zeros(1, 4, 8))
    assert reading.word.text == "dog" and reading.confidence > 0.35
    (jersey,) = guide_for(logits_for(("jersey", 0.2), *breeds), threshold=0.3).read(torch.zeros(1, 4, 8))
    assert jersey.word is None and jersey.constraint is None
    assert jersey.labels[0].label == "jersey" and jersey.labels[0].word is None


def test_below_the_threshold_or_switched_off_there_is_no_constraint_but_labels_remain():
    (weak,) = guide_for(logits_for(("koala", 0.25)), threshold=0.3).read(torch.zeros(1, 4, 8))
    assert weak.word is None and weak.constraint is None and weak.labels[0].label == "koala"
    (off,) = guide_for(logits_for(("koala", 0.9))).read(torch.zeros(1, 4, 8), guide=False)
    assert off.constraint is None and off.labels[0].confidence == pytest.approx(0.9, abs=1e-3)


def test_a_trusted_confidence_makes_the_constraint_always_taken():
    logits = logits_for(("tabby", 0.5), ("Egyptian cat", 0.2))
    (sure,) = guide_for(logits, trust=0.6).read(torch.zeros(1, 4, 8))
    assert sure.confidence == pytest.approx(0.7, abs=1e-3) and sure.constraint.margin == math.inf
    (unsure,) = guide_for(logits, trust=0.8).read(torch.zeros(1, 4, 8))
    assert unsure.constraint.margin is None  # the search's constraint_margin decides
    assert unsure.constraint.token_ids == sure.constraint.token_ids
    with pytest.raises(ValueError, match="trust"):
        guide_for(logits, trust=-0.1)


def test_a_caption_that_did_not_meet_the_constraint_is_left_alone():
    guide = guide_for(logits_for(("koala", 0.9)))
    (reading,) = guide.read(torch.zeros(1, 4, 8))
    caption = decoded(["a", "dog", "is", "in", "a", "tree"], False, None)
    assert guide.caption_words(caption, reading) == ["a", "dog", "is", "in", "a", "tree"]
    assert Guide.guided_by(caption, reading) is None


def test_a_word_with_neither_itself_nor_a_stand_in_in_the_vocabulary_gives_no_constraint():
    (reading,) = guide_for(logits_for(("frying pan", 0.9))).read(torch.zeros(1, 4, 8))
    assert reading.word.text == "pan" and reading.constraint is None


def test_living_things_are_made_the_subject_and_objects_may_fall_anywhere():
    (koala,) = guide_for(logits_for(("koala", 0.9))).read(torch.zeros(1, 4, 8))
    assert koala.constraint.within == 5
    (ball,) = guide_for(logits_for(("soccer ball", 0.9))).read(torch.zeros(1, 4, 8))
    assert ball.word.text == "ball" and ball.constraint.within is None
    (anywhere,) = guide_for(logits_for(("koala", 0.9)), subject_within=None).read(torch.zeros(1, 4, 8))
    assert anywhere.constraint.within is None


def test_region_classifier_only_for_encoders_with_an_imagenet_head():
    class WithHead(nn.Module):
        feature_dim = 6

        def __init__(self, outputs: int) -> None:
            super().__init__()
            self.classifier_tail = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(6, outputs))

    assert region_classifier(nn.Conv2d(3, 6, 1), (2, 2)) is None
    assert region_classifier(WithHead(10), (2, 2)) is None
    encoder = WithHead(1000)
    classify = region_classifier(encoder, (2, 3))
    regions = torch.randn(2, 6, 6)  # (B, h*w, D) row-major
    grid = regions.transpose(1, 2).reshape(2, 6, 2, 3)
    torch.testing.assert_close(classify(regions), encoder.classifier_tail(grid))


def test_thresholds_outside_0_1_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        guide_for(logits_for(("koala", 0.9)), threshold=1.5)
