"""The training reward is CIDEr-D: with the scored set as its corpus it equals the metric."""

from __future__ import annotations

import random

import numpy as np
import pytest

from captioner.metrics.cider import Cider
from captioner.metrics.cider_reward import CiderDReward

WORDS = "a the dog man runs on grass in water red ball child jumps over rock black white two".split()


def random_caption(rng: random.Random) -> list[str]:
    return [rng.choice(WORDS) for _ in range(rng.randint(1, 12))]


def test_reward_equals_cider_d_when_corpus_is_the_scored_set() -> None:
    rng = random.Random(0)
    references = {i: [random_caption(rng) for _ in range(rng.randint(1, 5))] for i in range(40)}
    candidates = {i: random_caption(rng) for i in references}
    _, expected = Cider().compute_score(
        {i: [" ".join(r) for r in refs] for i, refs in references.items()},
        {i: [" ".join(c)] for i, c in candidates.items()},
    )
    reward = CiderDReward(references)
    got = reward.scores([candidates[i] for i in references], list(references))
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)


def test_idf_comes_from_the_corpus_not_the_batch() -> None:
    # "dog" is in every image's references, "kayak" in one: matching the rare word earns reward,
    # matching the word every image has earns none (idf log(N) - log(N) = 0).
    corpus = {i: [["a", "dog", "on", "grass"]] for i in range(9)}
    corpus[9] = [["a", "dog", "and", "a", "kayak"]]
    reward = CiderDReward(corpus)
    assert reward.score(["a", "kayak"], 9) > 0
    assert reward.score(["a", "dog"], 0) == 0.0


def test_perfect_match_beats_partial_and_lengths_are_checked() -> None:
    corpus = {"x": [["a", "man", "rides", "a", "red", "bike"]], "y": [["two", "dogs", "play"]]}
    reward = CiderDReward(corpus)
    assert reward.score(["a", "man", "rides", "a", "red", "bike"], "x") > reward.score(["a", "man", "rides"], "x")
    with pytest.raises(ValueError):
        reward.scores([["a"]], ["x", "y"])


def test_score_against_any_captions_uses_the_corpus_idf() -> None:
    """Against an image's own references it is exactly ``score``, i.e. the metric (above); against
    other captions (a photo's candidate captions) the idf still comes from the corpus."""
    rng = random.Random(1)
    references = {i: [random_caption(rng) for _ in range(rng.randint(1, 5))] for i in range(30)}
    reward = CiderDReward(references)
    for i in range(30):
        candidate = random_caption(rng)
        assert reward.score_against(candidate, references[i]) == reward.score(candidate, i)
    corpus = {i: [["a", "dog", "on", "grass"]] for i in range(9)}
    corpus[9] = [["a", "dog", "and", "a", "kayak"]]
    reward = CiderDReward(corpus)
    assert reward.score_against(["a", "dog"], [["a", "dog", "swims"]]) == 0.0  # "a dog" is everywhere
    assert reward.score_against(["a", "kayak"], [["a", "red", "kayak"]]) > 0
    assert reward.score_against(["a", "kayak"], []) == 0.0
