"""Grounded precision: true captions score 1, each kind of false claim scores lower."""

from __future__ import annotations

import json

import pytest

from captioner.data.scenes import (
    SceneObject,
    SceneTruth,
    build_scenes,
    corpus_grounded_precision,
    find_scene_truths,
    grounded_precision,
    load_scene_truths,
)
from captioner.data.scenes.generator import make_example
from captioner.errors import DatasetFormatError

# . . S      row 0: small blue square top right
# C . .      row 1: large red circle middle left
# T . T      row 2: two small green triangles, bottom left and bottom right
SCENE = SceneTruth(
    image_id=1,
    objects=(
        SceneObject(row=0, col=2, shape="square", colour="blue", size="small"),
        SceneObject(row=1, col=0, shape="circle", colour="red", size="large"),
        SceneObject(row=2, col=0, shape="triangle", colour="green", size="small"),
        SceneObject(row=2, col=2, shape="triangle", colour="green", size="small"),
    ),
)


@pytest.mark.parametrize("split", ["train", "test-novel"])
def test_every_true_caption_of_many_generated_scenes_scores_one(split):
    for index in range(400):
        scene, captions, _ = make_example(7, split, index, index)
        for caption in captions:
            result = grounded_precision(caption, scene)
            assert result.precision == 1.0, (caption, scene, result.errors)
            assert result.checked >= 1 and not result.errors


@pytest.mark.parametrize(
    "caption",
    [
        "a large red circle to the left of a small blue square",
        "two small green triangles",
        "there are four shapes",
        "a blue square in the top right corner",
        "a red circle on the left",
        "a red circle above a green triangle",
        "two green triangles below a red circle",
        "a small blue square next to nothing at all",
        "a green triangle next to a red circle",
    ],
)
def test_true_hand_written_captions(caption):
    assert grounded_precision(caption, SCENE).precision == 1.0


@pytest.mark.parametrize(
    ("caption", "checked", "correct", "error"),
    [
        # wrong colour: shape right (1), colour wrong (0)
        ("a yellow circle", 2, 1, "no yellow circle"),
        # wrong shape: no star at all, so neither the shape nor its colour holds
        ("a red star", 2, 0, "no star"),
        # wrong size
        ("a small red circle", 3, 2, "no small red circle"),
        # wrong relation: the circle is left of the square, not right of it
        ("a red circle to the right of a blue square", 5, 4, "is not right of"),
        ("a blue square below a red circle", 5, 4, "is not below"),
        # wrong count
        ("three green triangles", 3, 2, "has 2, not 3"),
        ("there are two shapes", 1, 0, "has 4, not 2"),
        # wrong position
        ("a red circle in the top left corner", 3, 2, "is not at the"),
        # plural subject: not every triangle is next to the circle
        ("two triangles next to a circle", 4, 3, "is not next to"),
    ],
)
def test_each_kind_of_false_claim_lowers_precision(caption, checked, correct, error):
    result = grounded_precision(caption, SCENE)
    assert (result.checked, result.correct) == (checked, correct)
    assert result.precision == pytest.approx(correct / checked)
    assert any(error in e for e in result.errors), result.errors


def test_a_caption_with_nothing_checkable_is_flagged_with_precision_zero():
    result = grounded_precision("the quick brown fox jumps", SCENE)
    assert (result.precision, result.checked, result.correct) == (0.0, 0, 0)
    assert result.flagged and "nothing checkable" in result.errors[0]
    assert not grounded_precision("a circle", SCENE).flagged


def test_generated_caption_with_unknown_words_is_still_checked():
    result = grounded_precision("a <unk> red circle , above a green triangle .", SCENE)
    assert result.precision == 1.0 and result.checked == 5


def test_corpus_precision_is_a_micro_average_and_counts_empty_captions_as_wrong():
    truths = {1: SCENE, 2: SceneTruth(2, (SceneObject(1, 1, "star", "white", "large"),))}
    # caption 1: 2 checks, 1 correct; caption 2: 3 checks, 3 correct -> 4 / 5
    assert corpus_grounded_precision({1: "a yellow circle", 2: "a large white star"}, truths) == 0.8
    # nothing checkable counts as one failed check: 3 / (3 + 1)
    assert corpus_grounded_precision({1: "hello", 2: "a large white star"}, truths) == 0.75
    with pytest.raises(ValueError, match="no ground truth"):
        corpus_grounded_precision({9: "a star"}, truths)


def test_loaders_read_the_ground_truth_of_a_built_dataset(tmp_path):
    out = build_scenes(tmp_path / "s", sizes={"val": 3, "test-novel": 2}, workers=1, progress=False)
    truths = load_scene_truths(out / "annotations" / "scenes_val.json")
    assert len(truths) == 3 and all(isinstance(t, SceneTruth) for t in truths.values())
    assert find_scene_truths(out, "dev") == truths
    assert find_scene_truths(out / "annotations" / "captions_test-novel.json", "test-novel").keys() == {4, 5}
    assert find_scene_truths(tmp_path, "val") is None
    captions = json.loads((out / "annotations" / "captions_val.json").read_text())["annotations"]
    by_image = {a["image_id"]: a["caption"] for a in captions}
    assert corpus_grounded_precision(by_image, truths) == 1.0


def test_malformed_ground_truth_file(tmp_path):
    path = tmp_path / "scenes_val.json"
    path.write_text(json.dumps({"scenes": [{"image_id": 1, "objects": [{"shape": "blob"}]}]}))
    with pytest.raises(DatasetFormatError, match=r"scenes\[0\] is malformed"):
        load_scene_truths(path)
