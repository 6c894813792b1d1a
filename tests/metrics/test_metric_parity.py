"""BLEU, ROUGE-L and CIDEr-D against pycocoevalcap 1.2 (the reference implementation).

Scorers are fed the same pre-tokenized input as pycocoevalcap's; separately, ``score_captions``
(tokenization + scores) is compared end to end with pycocoevalcap's Java tokenizer + scorers.
Every score must agree to 1e-6, corpus and per image.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from captioner.metrics import score_captions
from captioner.metrics.bleu import Bleu
from captioner.metrics.cider import Cider
from captioner.metrics.rouge import Rouge, lcs_lengths
from captioner.metrics.tokenizer import tokenize_captions

reference = pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is the reference")
from pycocoevalcap.bleu.bleu import Bleu as ReferenceBleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider as ReferenceCider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge as ReferenceRouge  # noqa: E402
from pycocoevalcap.rouge.rouge import my_lcs  # noqa: E402

TOLERANCE = 1e-6


def reference_scores(gts: dict, res: dict) -> dict[str, tuple[float, list[float]]]:
    """pycocoevalcap's numbers, keyed by our metric names."""
    scores: dict[str, tuple[float, list[float]]] = {}
    bleu, bleu_images = ReferenceBleu(4).compute_score(gts, res, verbose=0)
    for k in range(4):
        scores[f"BLEU-{k + 1}"] = (bleu[k], bleu_images[k])
    scores["ROUGE-L"] = ReferenceRouge().compute_score(gts, res)
    scores["CIDEr"] = ReferenceCider().compute_score(gts, res)
    return scores


def our_scores(gts: dict, res: dict) -> dict[str, tuple[float, list[float]]]:
    scores: dict[str, tuple[float, list[float]]] = {}
    bleu, bleu_images = Bleu(4).compute_score(gts, res)
    for k in range(4):
        scores[f"BLEU-{k + 1}"] = (bleu[k], bleu_images[k])
    scores["ROUGE-L"] = Rouge().compute_score(gts, res)
    scores["CIDEr"] = Cider().compute_score(gts, res)
    return scores


def assert_same(ours: dict, expected: dict) -> None:
    assert ours.keys() == expected.keys()
    for name, (corpus, per_image) in expected.items():
        assert ours[name][0] == pytest.approx(corpus, abs=TOLERANCE), name
        np.testing.assert_allclose(ours[name][1], per_image, rtol=0, atol=TOLERANCE, err_msg=name)


def mixed_candidates(references: dict, seed: int = 0) -> dict:
    """Per image: another image's caption, one of its own, "a", or a very long caption."""
    rng = random.Random(seed)
    keys = list(references)
    candidates = {}
    for i, key in enumerate(keys):
        kind = i % 4
        if kind == 0:
            candidates[key] = references[keys[(i + 7) % len(keys)]][0]
        elif kind == 1:
            candidates[key] = rng.choice(references[key])
        elif kind == 2:
            candidates[key] = "a"
        else:
            candidates[key] = " ".join(references[key] + references[keys[(i + 3) % len(keys)]])
    return candidates


def test_scorers_match_pycocoevalcap_on_small_set(
    small_references: dict[int, list[str]], small_candidates: dict[int, str]
) -> None:
    gts = tokenize_captions(small_references)
    res = tokenize_captions({key: [caption] for key, caption in small_candidates.items()})
    assert_same(our_scores(gts, res), reference_scores(gts, res))


def test_scorers_match_pycocoevalcap_on_untidy_pretokenized_strings() -> None:
    # Scorers take strings as given: double spaces (ROUGE splits on " ", BLEU/CIDEr on any
    # whitespace), a reference shared by every image (idf 0) and a one-image-only n-gram.
    gts = {
        "a": ["a dog  runs", "the dog runs fast", "common words here"],
        "b": ["a cat sleeps", "common words here", " a cat"],
        "c": ["birds fly high", "common words here"],
    }
    res = {"a": ["a dog runs runs"], "b": ["common words here"], "c": [" birds  fly"]}
    assert_same(our_scores(gts, res), reference_scores(gts, res))


def test_single_image_matches_pycocoevalcap() -> None:
    # With one image every idf is log(1) - log(1) = 0, so CIDEr-D is 0, as in the reference.
    gts = {0: ["a dog runs", "the dog is running"]}
    res = {0: ["a dog runs"]}
    assert_same(our_scores(gts, res), reference_scores(gts, res))


def test_scorers_match_pycocoevalcap_on_flickr8k(
    flickr8k_captions: dict[str, list[str]], flickr8k_dev_ids: list[str]
) -> None:
    references = {name: flickr8k_captions[name] for name in flickr8k_dev_ids[:300]}
    gts = tokenize_captions(references)
    res = tokenize_captions({key: [c] for key, c in mixed_candidates(references).items()})
    assert_same(our_scores(gts, res), reference_scores(gts, res))


def test_score_captions_matches_pycocoevalcap_on_small_set_without_java(
    small_references: dict[int, list[str]], small_candidates: dict[int, str]
) -> None:
    # Tokenization is checked against Java elsewhere; here the whole pipeline is compared with
    # pycocoevalcap's scorers on the same tokens.
    candidates = small_candidates
    scores = score_captions(small_references, candidates, meteor=False)
    gts = tokenize_captions(small_references)
    res = tokenize_captions({key: [caption] for key, caption in candidates.items()})
    expected = reference_scores(gts, res)
    ours = {
        name: (scores.corpus[name], [scores.per_image[key][name] for key in gts])
        for name in expected
    }
    assert_same(ours, expected)


def test_score_captions_matches_pycocoevalcap_end_to_end(
    java: None, flickr8k_captions: dict[str, list[str]], flickr8k_dev_ids: list[str]
) -> None:
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as JavaPTBTokenizer

    references = {name: flickr8k_captions[name] for name in flickr8k_dev_ids[300:600]}
    candidates = mixed_candidates(references, seed=1)
    scores = score_captions(references, candidates, meteor=False)

    java_tokenizer = JavaPTBTokenizer()
    gts = java_tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in references.items()})
    res = java_tokenizer.tokenize({k: [{"caption": c}] for k, c in candidates.items()})
    expected = reference_scores(gts, res)
    ours = {
        name: (scores.corpus[name], [scores.per_image[key][name] for key in gts])
        for name in expected
    }
    assert_same(ours, expected)


def test_lcs_matches_reference_dynamic_programme() -> None:
    rng = random.Random(3)
    words = ["a", "b", "c", "d", ""]
    first, second = [], []
    for length_a, length_b in [(0, 3), (1, 1), (5, 9), (64, 20), (65, 70), (130, 3), (40, 200)]:
        first.append([rng.choice(words) for _ in range(length_a)])
        second.append([rng.choice(words) for _ in range(length_b)])
    expected = [my_lcs(a, b) for a, b in zip(first, second)]
    assert lcs_lengths(first, second).tolist() == expected
