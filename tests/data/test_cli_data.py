"""``captioner data scenes`` and ``captioner data stats``, in-process and as a real command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from captioner.cli import main

REPO_ROOT = Path(__file__).resolve().parents[2]
TINY = ["--train-size", "6", "--val-size", "2", "--test-size", "2", "--novel-size", "2"]


def test_data_scenes_then_stats_in_process(tmp_path, capsys):
    out = tmp_path / "scenes"
    assert main(["data", "scenes", "--out", str(out), "--seed", "3", *TINY, "--no-progress"]) == 0
    assert f"wrote 12 images (train 6, val 2, test 2, test-novel 2) to {out}" in capsys.readouterr().out
    assert len(list((out / "images" / "train").glob("*.png"))) == 6

    assert main(["data", "stats", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["format"] == "coco" and stats["images"] == 12 and stats["captions"] == 60
    assert stats["splits"]["test-novel"] == {"images": 2, "captions": 10}
    assert stats["missing_images"] == 0
    assert stats["caption_tokens"]["p5"] <= stats["caption_tokens"]["p50"] <= stats["caption_tokens"]["max"]

    assert main(["data", "stats", str(out), "--split", "train"]) == 0
    text = capsys.readouterr().out
    assert "images:          6" in text and "captions:        30" in text and "missing images:  0" in text


def test_stats_counts_missing_images(tmp_path, capsys, write_image):
    write_image(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_text("image,caption\na.png,a red thing\nb.png,a blue thing\n")
    assert main(["data", "stats", str(tmp_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert (stats["images"], stats["missing_images"], stats["format"]) == (1, 1, "folder")


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    assert main(["data", "stats", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("captioner: error: ") and "does not exist" in err
    assert "Traceback" not in err and err.count("\n") == 1

    assert main(["data", "scenes", "--out", str(tmp_path / "x"), "--image-size", "4", "--no-progress"]) == 2
    assert "image_size must be at least" in capsys.readouterr().err


def test_installed_command_builds_scenes(tmp_path):
    executable = REPO_ROOT / ".venv" / "bin" / "captioner"
    if not executable.exists():
        executable = Path(sys.executable).parent / "captioner"
    if not executable.exists():
        pytest.skip("the captioner command is not installed in this environment (pip install -e .)")
    out = tmp_path / "scenes"
    finished = subprocess.run(
        [str(executable), "data", "scenes", "--out", str(out), *TINY, "--no-progress"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert finished.returncode == 0, finished.stderr
    assert "wrote 12 images" in finished.stdout
    assert (out / "annotations" / "captions_test-novel.json").is_file()

    broken = subprocess.run(
        [str(executable), "data", "stats", str(out / "README.md")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert broken.returncode == 2 and "cannot tell the dataset format" in broken.stderr
    assert "Traceback" not in broken.stderr


def _run_without_endings(tmp_path: Path, write_image, captions: list[str]) -> Path:
    """A run directory as written before caption endings were counted, on a folder dataset."""
    from captioner.data.text import Vocabulary, tokenize_caption
    from captioner.training.config import DataConfig, RunConfig

    data = tmp_path / "data"
    rows = ["image,caption"]
    for index, caption in enumerate(captions):
        write_image(data / f"{index}.png")
        rows.append(f"{index}.png,{caption}")
    (data / "captions.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    run.mkdir()
    RunConfig(data=DataConfig(path=str(data))).save(run / "config.json")
    built = Vocabulary.build([tokenize_caption(c) for c in captions], min_count=1)
    Vocabulary(built.tokens[4:], min_count=1).save(run / "vocab.json")
    return run


def test_data_endings_adds_the_counts_to_an_older_run(tmp_path, capsys, write_image):
    from captioner.data.text import Vocabulary

    run = _run_without_endings(tmp_path, write_image, ["a dog runs on the grass"] * 25 + ["a dog sleeps"] * 25)
    before = Vocabulary.load(run / "vocab.json")
    assert before.endings is None
    assert main(["data", "endings", str(run)]) == 0
    assert "vocab.json: " in capsys.readouterr().out
    after = Vocabulary.load(run / "vocab.json")
    assert after == before  # same tokens, same ids
    assert after.endings is not None and {"a", "on", "the"} <= after.endings.words


def test_data_endings_refuses_captions_of_another_dataset(tmp_path, capsys, write_image):
    run = _run_without_endings(tmp_path, write_image, ["a dog runs on the grass"] * 3)
    other = tmp_path / "other"
    write_image(other / "x.png")
    (other / "captions.csv").write_text("image,caption\nx.png,zebras graze beside acacia trees\n")
    assert main(["data", "endings", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "not this run's training data" in err and err.count("\n") == 1


def test_data_endings_on_captions_without_words_is_one_line(tmp_path, capsys, write_image):
    run = _run_without_endings(tmp_path, write_image, ["a dog runs on the grass"] * 3)
    other = tmp_path / "punctuation"
    write_image(other / "x.png")
    (other / "captions.csv").write_text("image,caption\nx.png,...\n")  # no word once tokenized
    assert main(["data", "endings", str(run), "--data", str(other)]) == 2
    err = capsys.readouterr().err
    assert "has no captions" in err and err.count("\n") == 1
