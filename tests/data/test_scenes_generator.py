"""The scenes dataset builder: layout, determinism, held-out pairs, true captions."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.data.readers import load_records
from captioner.data.scenes import build_scenes, held_out_pairs, load_scene_truths
from captioner.data.scenes.generator import allowed_pairs, make_example
from captioner.data.scenes.truth import BACKGROUND, COLOURS, SHAPES
from captioner.data.text import tokenize_caption
from captioner.errors import DatasetFormatError

SMALL = {"train": 60, "val": 10, "test": 10, "test-novel": 10}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return build_scenes(tmp_path_factory.mktemp("scenes") / "out", seed=0, sizes=SMALL,
                        workers=2, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_coco_and_reads_back_with_the_auto_detected_reader(built):
    for split, count in SMALL.items():
        assert len(list((built / "images" / split).glob("*.png"))) == count
        assert (built / "annotations" / f"captions_{split}.json").is_file()
        assert (built / "annotations" / f"scenes_{split}.json").is_file()
    assert "held out" in (built / "README.md").read_text()
    records = load_records(built)
    assert len(records) == sum(SMALL.values())
    assert all(len(r.captions) == 5 and len(set(r.captions)) == 5 for r in records)
    assert len({r.image_id for r in records}) == len(records)  # ids unique across splits
    picture = Image.open(records[0].image_path)
    assert picture.size == (64, 64) and picture.mode == "RGB"


def test_same_seed_gives_byte_identical_files_whatever_the_worker_count(built, tmp_path):
    again = build_scenes(tmp_path / "again", seed=0, sizes=SMALL, workers=1, progress=False)
    assert _files(again) == _files(built)
    other_seed = build_scenes(tmp_path / "other", seed=1, sizes=SMALL, workers=1, progress=False)
    assert _files(other_seed) != _files(built)


def test_held_out_pairs_never_occur_outside_test_novel(built):
    held_out = {tuple(p) for p in held_out_pairs(0)}
    assert len(held_out) == 5  # about 10% of the 48 colour+shape pairs
    assert len({c for c, _ in held_out}) == 5 and len({s for _, s in held_out}) == 5
    for split in SMALL:
        truths = load_scene_truths(built, split)
        pairs = {(o.colour, o.shape) for t in truths.values() for o in t.objects}
        if split == "test-novel":
            assert pairs <= held_out
        else:
            assert not pairs & held_out
    # Every held-out colour and shape is still seen in training, with other partners.
    seen = set(allowed_pairs(0, "train"))
    assert {c for c, _ in held_out} <= {c for c, _ in seen}
    assert {s for _, s in held_out} <= {s for _, s in seen}
    assert held_out_pairs(1) != held_out_pairs(0)


def test_many_train_scenes_never_use_a_held_out_pair():
    held_out = set(held_out_pairs(0))
    for index in range(500):
        scene, _, _ = make_example(0, "train", index, index)
        assert not {(o.colour, o.shape) for o in scene.objects} & held_out


def test_ground_truth_file_has_objects_and_relations(built):
    data = json.loads((built / "annotations" / "scenes_val.json").read_text())
    assert data["held_out_pairs"] == [list(p) for p in held_out_pairs(0)]
    scene = data["scenes"][0]
    assert {"image_id", "file_name", "objects", "relations"} <= set(scene)
    assert {"shape", "colour", "size", "row", "col"} == set(scene["objects"][0])


def test_scenes_cover_counts_sizes_and_object_numbers():
    scenes = [make_example(3, "train", i, i)[0] for i in range(300)]
    assert {len(s.objects) for s in scenes} == {1, 2, 3, 4}
    assert {o.size for s in scenes for o in s.objects} == {"small", "large"}
    assert {o.shape for s in scenes for o in s.objects} == set(SHAPES)
    repeats = sum(
        any(n > 1 for n in Counter((o.colour, o.shape) for o in s.objects).values())
        for s in scenes
    )
    assert repeats > 30  # counting captions ("two green triangles") need repeated objects
    cells = [[(o.row, o.col) for o in s.objects] for s in scenes]
    assert all(len(c) == len(set(c)) for c in cells)


def test_captions_use_a_small_vocabulary():
    words = {w for i in range(400) for c in make_example(0, "train", i, i)[1] for w in tokenize_caption(c)}
    assert 40 <= len(words) <= 60


def test_colours_are_clearly_distinct():
    for a, b in itertools.combinations([*COLOURS.values(), BACKGROUND], 2):
        assert max(abs(x - y) for x, y in zip(a, b)) >= 90


def test_pictures_show_each_object_in_its_cell_in_its_colour(built):
    truths = load_scene_truths(built, "val")
    for truth in truths.values():
        pixels = np.asarray(Image.open(built / "images" / "val" / truth.file_name)).astype(int)
        cell = 64 // 3
        occupied = {(o.row, o.col): o for o in truth.objects}
        for row in range(3):
            for col in range(3):
                patch = pixels[row * cell:(row + 1) * cell, col * cell:(col + 1) * cell]
                background = (np.abs(patch - BACKGROUND).max(axis=2) <= 8).mean()
                if (row, col) not in occupied:
                    assert background > 0.97
                    continue
                colour = COLOURS[occupied[row, col].colour]
                assert (np.abs(patch - colour).max(axis=2) <= 10).sum() >= 12  # >= 12 pixels


def test_image_size_is_a_parameter(tmp_path):
    out = build_scenes(tmp_path / "big", sizes={"train": 2}, image_size=96, workers=1, progress=False)
    assert Image.open(next((out / "images" / "train").glob("*.png"))).size == (96, 96)
    assert not (out / "images" / "val").exists()


def test_refuses_a_folder_with_other_files_but_rebuilds_its_own(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(DatasetFormatError, match="not empty"):
        build_scenes(tmp_path, sizes={"train": 1}, workers=1, progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    out = build_scenes(tmp_path / "s", sizes={"train": 3}, workers=1, progress=False)
    build_scenes(out, sizes={"train": 2}, workers=1, progress=False)
    assert len(list((out / "images" / "train").glob("*.png"))) == 2


def test_bad_sizes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown scenes splits"):
        build_scenes(tmp_path / "x", sizes={"training": 3}, progress=False)
    with pytest.raises(ValueError, match="image_size"):
        build_scenes(tmp_path / "x", sizes={"train": 3}, image_size=8, progress=False)
