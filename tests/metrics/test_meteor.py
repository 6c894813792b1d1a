"""METEOR: the jar wrapper against pycocoevalcap's numbers, and its unavailability path."""

from __future__ import annotations

import shutil

import pytest

import captioner.metrics.meteor as meteor_module
from captioner.metrics import score_captions
from captioner.metrics.meteor import Meteor, MeteorError, meteor_unavailable_reason
from captioner.metrics.tokenizer import tokenize_captions

# pycocoevalcap 1.2 ``Meteor().compute_score`` on the small set of conftest.py, tokenized by its
# Java PTBTokenizer (captions in image order 1..8). Obtained once by running pycocoevalcap.
PYCOCOEVALCAP_CORPUS = 0.146725438919947
PYCOCOEVALCAP_PER_IMAGE = [
    1.0, 0.06363636363636364, 0.03319502074688797, 0.10972201487047711,
    0.16258030995864708, 0.0, 0.41439507419900884, 0.27006058630237484,
]


@pytest.fixture()
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    real_which = shutil.which
    def which(name: str, *args: object, **kwargs: object) -> str | None:
        return None if name == "java" else real_which(name, *args, **kwargs)

    monkeypatch.setattr(meteor_module.shutil, "which", which)


def test_unavailable_without_java_is_none_not_zero(
    no_java: None, small_references: dict, small_candidates: dict
) -> None:
    assert "Java" in (meteor_unavailable_reason() or "")
    scores = score_captions(small_references, small_candidates)  # meteor="auto"
    assert scores.corpus["METEOR"] is None
    assert all("METEOR" not in values for values in scores.per_image.values())
    assert "METEOR   n/a" in scores.table()
    assert scores.corpus["CIDEr"] is not None


def test_required_meteor_without_java_raises_one_line_error(
    no_java: None, small_references: dict, small_candidates: dict
) -> None:
    with pytest.raises(MeteorError, match="Java") as error:
        score_captions(small_references, small_candidates, meteor=True)
    assert "\n" not in str(error.value)
    with pytest.raises(MeteorError):
        Meteor()


@pytest.mark.slow
def test_matches_pycocoevalcap_meteor(small_references: dict, small_candidates: dict) -> None:
    reason = meteor_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    gts = tokenize_captions(small_references)
    res = tokenize_captions({key: [caption] for key, caption in small_candidates.items()})
    with Meteor() as scorer:
        corpus, per_image = scorer.compute_score(gts, res)
        # The process stays usable for a second batch.
        again, _ = scorer.compute_score({1: gts[1]}, {1: res[1]})
    assert corpus == pytest.approx(PYCOCOEVALCAP_CORPUS, abs=1e-6)
    assert per_image == pytest.approx(PYCOCOEVALCAP_PER_IMAGE, abs=1e-6)
    assert again == pytest.approx(PYCOCOEVALCAP_PER_IMAGE[0], abs=1e-6)
    assert scorer._process is None  # closed by the context manager


def test_a_hung_or_dead_jvm_raises_and_is_cleaned_up(small_references: dict) -> None:
    reason = meteor_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    gts = tokenize_captions(small_references)
    res = {key: [captions[0]] for key, captions in gts.items()}
    # Far too short for the JVM to load its paraphrase table: the watchdog kills it.
    scorer = Meteor(timeout_s=0.5)
    with pytest.raises(MeteorError, match="stopped after 0 of 8 answers") as error:
        scorer.compute_score(gts, res)
    assert "\n" not in str(error.value)
    assert scorer._process is None
    with pytest.raises(MeteorError, match="not running"):
        scorer.compute_score(gts, res)
