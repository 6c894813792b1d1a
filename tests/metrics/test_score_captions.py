"""``score_captions``: its result shape and its input checks (as pycocoevalcap's behaviour)."""

from __future__ import annotations

import pytest

from captioner.errors import ConfigError, DatasetFormatError
from captioner.metrics import METRIC_NAMES, score_captions
from captioner.metrics.tokenizer import tokenize_captions

pytest.importorskip("pycocoevalcap", reason="pycocoevalcap is the reference")
from pycocoevalcap.bleu.bleu import Bleu as ReferenceBleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider as ReferenceCider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge as ReferenceRouge  # noqa: E402


def test_result_has_every_metric_key_and_per_image_scores(
    small_references: dict, small_candidates: dict
) -> None:
    scores = score_captions(small_references, small_candidates, meteor=False)
    assert list(scores.corpus) == list(METRIC_NAMES)
    assert scores.corpus["METEOR"] is None
    assert list(scores.per_image) == list(small_references)  # reference order
    assert all(list(v) == [n for n in METRIC_NAMES if n != "METEOR"] for v in scores.per_image.values())
    assert scores.per_image[1]["BLEU-1"] == pytest.approx(1.0)  # its own reference
    table = scores.table().splitlines()
    assert [line.split()[0] for line in table] == list(METRIC_NAMES)
    assert len({line.rindex(" ") for line in table}) == 1  # values aligned


def test_only_scores_images_with_a_candidate(small_references: dict) -> None:
    scores = score_captions(small_references, {2: "two kids play soccer"}, meteor=False)
    assert list(scores.per_image) == [2]
    # With one scored image every CIDEr-D idf is 0 (document frequencies use scored images only).
    assert scores.corpus["CIDEr"] == 0.0


def test_metric_subset_leaves_the_others_none(small_references: dict, small_candidates: dict) -> None:
    scores = score_captions(small_references, small_candidates, metrics=["BLEU-4", "CIDEr"])
    assert {k for k, v in scores.corpus.items() if v is not None} == {"BLEU-4", "CIDEr"}
    with pytest.raises(ConfigError, match="SPICE"):
        score_captions(small_references, small_candidates, metrics=["SPICE"])


def test_empty_candidate_scores_zero_like_pycocoevalcap(small_references: dict) -> None:
    candidates = {1: "a dog runs on the grass", 2: "", 3: "..."}
    scores = score_captions(small_references, candidates, meteor=False)
    for image in (2, 3):
        assert all(value == 0.0 for value in scores.per_image[image].values())
    # The same tokens through pycocoevalcap's scorers give the same numbers.
    gts = tokenize_captions({k: small_references[k] for k in candidates})
    res = tokenize_captions({k: [c] for k, c in candidates.items()})
    assert res[2] == [""] and res[3] == [""]
    bleu, _ = ReferenceBleu(4).compute_score(gts, res, verbose=0)
    assert [scores.corpus[f"BLEU-{k}"] for k in range(1, 5)] == pytest.approx(bleu, abs=1e-6)
    rouge, _ = ReferenceRouge().compute_score(gts, res)
    cider, _ = ReferenceCider().compute_score(gts, res)
    assert scores.corpus["ROUGE-L"] == pytest.approx(rouge, abs=1e-6)
    assert scores.corpus["CIDEr"] == pytest.approx(cider, abs=1e-6)


@pytest.mark.parametrize(
    ("references", "candidates", "message"),
    [
        ({1: ["a dog"]}, {2: "a dog"}, "no reference captions"),  # pycocotools asserts here too
        ({1: ["a dog"]}, {}, "no candidate captions"),
        ({1: []}, {1: "a dog"}, "list of reference captions"),
        ({1: "a dog"}, {1: "a dog"}, "list of reference captions"),
        ({1: ["a dog", None]}, {1: "a dog"}, "not text"),
        ({1: ["a dog"]}, {1: ["a dog"]}, "not text"),
    ],
)
def test_bad_inputs_raise_one_line_dataset_errors(
    references: dict, candidates: dict, message: str
) -> None:
    with pytest.raises(DatasetFormatError, match=message) as error:
        score_captions(references, candidates, meteor=False)
    assert "\n" not in str(error.value)


def test_a_thousand_images_keep_their_ids_and_scores(small_references: dict) -> None:
    # Not a timing assertion (see benchmarks/metrics_speed.py): a smoke test that 1,000 images
    # go through every metric and keep their ids.
    references = {(key, i): captions for i in range(125) for key, captions in small_references.items()}
    candidates = {key: captions[0] for key, captions in references.items()}
    scores = score_captions(references, candidates, meteor=False)
    assert len(scores.per_image) == 1000
    assert scores.corpus["BLEU-4"] == pytest.approx(1.0)
