"""`captioner attend` and `captioner caption-dir` as a user runs them, with a tiny trained model."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.cli import main

CAPTIONER = Path(sys.executable).with_name("captioner")


@pytest.fixture
def scene_photos(tiny_scenes: Path, tmp_path: Path) -> Path:
    """Six test scenes in a folder with a sub-folder, one broken file and one hidden folder."""
    root = tmp_path / "photos"
    sources = sorted((tiny_scenes / "images" / "test").glob("*.png"))[:6]
    for index, source in enumerate(sources):
        target = root / ("" if index < 4 else "more/") / (source.stem + (".png" if index % 2 else ".PNG"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)
    (root / "more" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (root / ".cache").mkdir()
    shutil.copy(sources[0], root / ".cache" / "hidden.png")
    return root


def test_attend_draws_one_figure_with_a_panel_per_word(tiny_run, tiny_scenes, tmp_path, capsys):
    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    figure = tmp_path / "fig.png"
    assert main(["attend", str(image), "--out", str(figure), "--checkpoint", str(tiny_run), "--beam-size", "2"]) == 0
    source, caption, written = capsys.readouterr().out.strip().split("\t")
    assert (source, written) == (str(image), str(figure))
    with Image.open(figure) as drawn:
        width, height = drawn.size
    words = len(caption.split())
    columns = min(5, words + 1)
    rows = -(-(words + 1) // columns)
    # 2.4-inch panels at 100 dpi: the figure grows with the number of words
    assert width >= columns * 240 and height >= rows * 240


def test_attend_writes_one_figure_per_photo_into_a_folder_and_reports_bad_files(tiny_run, tiny_scenes, tmp_path, capsys):
    images = sorted((tiny_scenes / "images" / "test").glob("*.png"))[:2]
    twin = tmp_path / "elsewhere" / images[0].name  # same file name in another folder
    twin.parent.mkdir()
    shutil.copy(images[0], twin)
    broken = tmp_path / "broken photo.jpg"
    broken.write_text("not a picture")
    out = tmp_path / "figures"
    status = main(["attend", str(images[0]), str(broken), str(images[1]), str(twin), "--out", str(out),
                   "--checkpoint", str(tiny_run)])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken photo.jpg" in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{images[0].stem}_attention.png", f"{images[1].stem}_attention.png", f"{images[0].stem}_attention_2.png"]
    )
    assert len(captured.out.strip().splitlines()) == 3


def test_attend_refuses_one_file_name_for_several_photos(tiny_run, tiny_scenes, tmp_path, capsys):
    images = sorted((tiny_scenes / "images" / "test").glob("*.png"))[:2]
    status = main(["attend", *map(str, images), "--out", str(tmp_path / "one.png"), "--checkpoint", str(tiny_run)])
    assert status == 2
    assert "pass a folder" in capsys.readouterr().err


def test_plot_result_from_python(tiny_run, tiny_scenes, tmp_path):
    from captioner.api import Captioner
    from captioner.visualization import plot_result

    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    (result,) = Captioner.from_pretrained(tiny_run).caption(image)
    figure = plot_result(result, tmp_path / "figure.svg")
    assert figure.read_text().lstrip().startswith("<?xml")
    (bad,) = Captioner.from_pretrained(tiny_run).caption(b"not an image")
    with pytest.raises(ValueError, match="no caption to draw"):
        plot_result(bad, tmp_path / "bad.png")


def test_caption_dir_matches_caption_and_reports_the_broken_file(tiny_run, scene_photos, tmp_path, capsys):
    out = tmp_path / "captions.jsonl"
    status = main(["caption-dir", str(scene_photos), "--out", str(out), "--checkpoint", str(tiny_run),
                   "--batch-size", "4", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 1
    summary = json.loads(captured.out)
    assert (summary["found"], summary["captioned"]) == (7, 6)
    assert [f["image"] for f in summary["failed"]] == ["more/broken.jpg"]
    assert "more/broken.jpg" in captured.err and "captioned 6, failed 1" in captured.err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 7 and "hidden" not in out.read_text()
    good = [r for r in records if "error" not in r]
    # The same captions as `captioner caption` gives one file at a time.
    assert main(["caption", *[str(scene_photos / r["image"]) for r in good], "--checkpoint", str(tiny_run),
                 "--beam-size", "3", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert [r["caption"] for r in good] == [r["caption"] for r in single]
    np.testing.assert_allclose([r["score"] for r in good], [r["score"] for r in single], atol=1e-3)


def test_caption_dir_csv_resumes_and_keeps_one_header(tiny_run, scene_photos, tmp_path, capsys):
    out = tmp_path / "captions.csv"
    common = ["caption-dir", str(scene_photos), "--out", str(out), "--checkpoint", str(tiny_run), "--no-progress"]
    main(common)
    capsys.readouterr()
    data = out.read_bytes()
    before_last = data.rindex(b"\n", 0, data.rindex(b"\n", 0, len(data) - 1))
    out.write_bytes(data[: before_last + 5])  # the last row lost, the one before it torn
    assert main(common) == 1
    assert "captioned 1, failed 1, already done 5" in capsys.readouterr().err
    (scene_photos / "more" / "broken.jpg").unlink()
    assert main([*common, "--retry-errors"]) == 0  # its error record is dropped, nothing fails
    rows = list(csv.reader(io.StringIO(out.read_text(), newline="")))
    assert rows[0] == ["image", "caption", "score", "error"]
    images = [row[0] for row in rows[1:]]
    assert len(images) == len(set(images)) == 6 and "more/broken.jpg" not in images


def test_caption_dir_as_a_process_shows_progress_and_no_traceback(tiny_run, scene_photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    process = subprocess.run(
        [str(CAPTIONER), "caption-dir", str(scene_photos), "--out", str(out), "--checkpoint", str(tiny_run)],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120,
    )
    assert process.returncode == 1
    assert "Traceback" not in process.stderr
    assert "img/s" in process.stderr  # tqdm's rate
    assert "captioner: failed more/broken.jpg: cannot read image" in process.stderr
    assert len(out.read_text().splitlines()) == 7
