"""``captioner score``: COCO files in, a table or JSON out, one-line errors for bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from captioner.cli import main

REFERENCES = {
    "images": [{"id": 3}, {"id": 1}, {"id": 2}],
    "annotations": [
        {"image_id": 1, "caption": "A black dog runs across the grass."},
        {"image_id": 1, "caption": "A dog is running on a lawn."},
        {"image_id": 2, "caption": "Two children play soccer on a field."},
        {"image_id": 2, "caption": "Kids kick a ball in the park."},
        {"image_id": 3, "caption": "A man rides a bicycle down a street."},
    ],
}
RESULTS = [
    {"image_id": 1, "caption": "a dog runs on the grass"},
    {"image_id": 2, "caption": "two kids playing soccer"},
]


def write(path: Path, value: object) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write(tmp_path / "refs.json", REFERENCES), write(tmp_path / "results.json", RESULTS)


def test_prints_an_aligned_table(files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    refs, results = files
    assert main(["score", "--references", str(refs), "--results", str(results), "--no-meteor"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "2 images scored"
    assert [line.split()[0] for line in lines[1:]] == [
        "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert lines[5].split()[1] == "n/a"


def test_json_and_per_image_output(
    files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    refs, results = files
    per_image = tmp_path / "per_image.jsonl"
    argv = ["score", "--references", str(refs), "--results", str(results), "--json",
            "--no-meteor", "--per-image", str(per_image)]
    assert main(argv) == 0
    scores = json.loads(capsys.readouterr().out)
    assert list(scores) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr"]
    assert scores["METEOR"] is None and 0 < scores["BLEU-1"] <= 1
    rows = [json.loads(line) for line in per_image.read_text(encoding="utf-8").splitlines()]
    assert [row["image_id"] for row in rows] == [1, 2]  # the order of "images"
    assert rows[0]["caption"] == "a dog runs on the grass" and "CIDEr" in rows[0]


@pytest.mark.parametrize(
    ("references", "results", "message"),
    [
        ({"images": []}, RESULTS, "not a COCO captions file"),
        (REFERENCES, {"image_id": 1, "caption": "x"}, "not a COCO results file"),
        (REFERENCES, [*RESULTS, {"image_id": 1, "caption": "again"}],
         "more than one result for image 1"),
        (REFERENCES, [{"image_id": "1", "caption": "x"}], "compared with their JSON types"),
        (REFERENCES, [{"image_id": 9, "caption": "x"}], "have no captions in"),
        (REFERENCES, [{"image_id": 1}], 'result #0 is not an object with "image_id" and "caption"'),
        ({"annotations": [{"image_id": 1, "caption": 5}]}, RESULTS, "caption that is not text"),
    ],
)
def test_bad_files_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], references: object, results: object, message: str
) -> None:
    refs, res = write(tmp_path / "refs.json", references), write(tmp_path / "res.json", results)
    assert main(["score", "--references", str(refs), "--results", str(res), "--no-meteor"]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_invalid_utf8_and_invalid_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = write(tmp_path / "res.json", RESULTS)
    bad_bytes = tmp_path / "latin1.json"
    bad_bytes.write_bytes(json.dumps(REFERENCES).replace("grass", "gr\u00e4ss").encode("latin-1"))
    assert main(["score", "--references", str(bad_bytes), "--results", str(results)]) == 2
    assert "not valid UTF-8" in capsys.readouterr().err
    truncated = tmp_path / "truncated.json"
    truncated.write_text(json.dumps(REFERENCES)[:40], encoding="utf-8")
    assert main(["score", "--references", str(truncated), "--results", str(results)]) == 2
    assert "not valid JSON (line 1" in capsys.readouterr().err
