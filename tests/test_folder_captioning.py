"""caption_folder and its results file: walking, resuming, torn lines, errors, CSV quoting.

A fake captioner stands in for the model (the walking and file rules do not depend on it), so
these run in milliseconds; tests/e2e runs the real CLI with a trained model.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from captioner.api import CaptionResult
from captioner.errors import CaptionerError
from captioner.folder_captioning import (
    FolderRecord,
    ResultsFile,
    ResultsFileError,
    caption_folder,
    find_images,
)


class FakeCaptioner:
    """Captions a picture with its size; can be told to fail on the n-th call (a crash)."""

    def __init__(self, crash_on_call: int | None = None) -> None:
        self.calls = 0
        self.captioned = 0
        self.crash_on_call = crash_on_call

    def caption(self, images, beam_size=3, max_length=None, batch_size=16, guidance=None):
        self.calls += 1
        if self.crash_on_call is not None and self.calls == self.crash_on_call:
            raise KeyboardInterrupt
        self.captioned += len(images)
        return [
            CaptionResult(source=f"<image {i}>", caption=f"a picture, {image.width} by {image.height}",
                          words=["a"], score=-image.width / 4)
            for i, image in enumerate(images)
        ]


def _photo(path: Path, size: tuple[int, int] = (6, 4), fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(path, fmt)
    return path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for index in range(7):
        _photo(root / f"p{index}.jpg", (6 + index, 4))
    _photo(root / "sub" / "Q.PNG")
    (root / "sub" / "broken.jpg").write_text("not a picture")
    return root


def _records(out: Path, fmt: str = "jsonl") -> list[dict]:
    text = out.read_text(encoding="utf-8")
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(text, newline="")))
    return [json.loads(line) for line in text.splitlines()]


def test_find_images_walks_recursively_case_insensitively_and_skips_hidden(tmp_path):
    root = tmp_path / "photos"
    for name in ("a.jpg", "B.JPEG", "c.Png", "deep/er/d.webp", "album.jpg/e.gif", ".hidden/f.jpg", ".g.jpg"):
        _photo(root / name, fmt="PNG")
    (root / "notes.txt").write_text("x")
    os.symlink("missing.jpg", root / "dangling.jpg")
    os.symlink("..", root / "deep" / "up")  # a loop: must end, and list nothing twice
    listing = find_images(root)
    assert listing.images == ["B.JPEG", "a.jpg", "album.jpg/e.gif", "c.Png", "dangling.jpg", "deep/er/d.webp"]


def test_find_images_on_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(CaptionerError, match="no_such_folder does not exist"):
        find_images(tmp_path / "no_such_folder")


def test_every_image_gets_one_record_and_errors_are_recorded(photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    summary = caption_folder(FakeCaptioner(), photos, out, batch_size=3, progress=False)
    records = _records(out)
    assert [r["image"] for r in records] == sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.*"))
    by_image = {r["image"]: r for r in records}
    assert by_image["p3.jpg"] == {"image": "p3.jpg", "caption": "a picture, 9 by 4", "score": by_image["p3.jpg"]["score"]}
    assert "sub/broken.jpg" in by_image["sub/broken.jpg"]["error"] and "caption" not in by_image["sub/broken.jpg"]
    assert (summary.found, summary.captioned, summary.already_done) == (9, 8, 0)
    assert [r.image for r in summary.failed] == ["sub/broken.jpg"] and not summary.ok
    assert summary.to_dict()["failed"][0]["image"] == "sub/broken.jpg"


def test_a_rerun_skips_what_is_done_and_loads_no_model(photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption_folder(FakeCaptioner(), photos, out, progress=False)
    before = out.read_bytes()

    def must_not_load():
        raise AssertionError("nothing to do: the model must not be loaded")

    summary = caption_folder(must_not_load, photos, out, progress=False)
    assert out.read_bytes() == before
    assert (summary.captioned, summary.already_done) == (0, 9)
    assert [r.image for r in summary.earlier_failures] == ["sub/broken.jpg"] and not summary.ok


def test_new_photos_are_added_on_a_rerun(photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption_folder(FakeCaptioner(), photos, out, progress=False)
    _photo(photos / "later.jpg")
    fake = FakeCaptioner()
    summary = caption_folder(fake, photos, out, progress=False)
    assert fake.captioned == 1 and summary.captioned == 1
    assert [r["image"] for r in _records(out)][-1] == "later.jpg"


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_a_crash_mid_run_resumes_without_writing_anything_twice(photos, tmp_path, fmt):
    out = tmp_path / f"captions.{fmt}"
    with pytest.raises(KeyboardInterrupt):
        caption_folder(FakeCaptioner(crash_on_call=2), photos, out, batch_size=3, progress=False, workers=1)
    first = _records(out, fmt)
    assert len(first) == 3  # the first batch, flushed; the second never written
    fake = FakeCaptioner()
    caption_folder(fake, photos, out, batch_size=3, progress=False)
    images = [r["image"] for r in _records(out, fmt)]
    assert len(images) == len(set(images)) == 9
    assert fake.captioned == 9 - 3 - 1  # not the done ones; the broken file never reaches the model
    if fmt == "csv":
        assert out.read_text().count("image,caption,score,error") == 1


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@pytest.mark.parametrize("tail", [b'{"image": "p6.jpg", "capt', b"p6.jpg,a pic", b'p6.jpg,"a picture\n of', b"\0\0\0\0"])
def test_a_torn_last_line_is_truncated_and_its_image_done_again(photos, tmp_path, fmt, tail):
    out = tmp_path / f"captions.{fmt}"
    caption_folder(FakeCaptioner(), photos, out, progress=False)
    whole = _records(out, fmt)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:-1]) + tail)  # the last record's write was cut short
    fake = FakeCaptioner()
    summary = caption_folder(fake, photos, out, progress=False)
    assert _records(out, fmt) == whole
    assert summary.captioned + len(summary.failed) == 1  # only the torn record was done again


def test_errors_are_retried_only_when_asked(photos, tmp_path):
    out = tmp_path / "captions.jsonl"
    caption_folder(FakeCaptioner(), photos, out, progress=False)
    _photo(photos / "sub" / "broken.jpg", fmt="JPEG")  # the user fixed the file
    assert caption_folder(FakeCaptioner(), photos, out, progress=False).captioned == 0
    summary = caption_folder(FakeCaptioner(), photos, out, retry_errors=True, progress=False)
    assert summary.captioned == 1 and summary.ok
    records = _records(out)
    assert len(records) == 9 and all("error" not in r for r in records)


def test_a_file_that_is_not_ours_is_never_rewritten(photos, tmp_path):
    for name, content in [("notes.jsonl", b"my own notes\n"), ("notes2.jsonl", b"no newline at the end"),
                          ("table.csv", b"name,age\nbob,3\n"), ("other.jsonl", b'{"a": 1}\n{"b": 2}\n')]:
        out = tmp_path / name
        out.write_bytes(content)
        with pytest.raises(ResultsFileError, match=name):
            caption_folder(FakeCaptioner(), photos, out, progress=False)
        assert out.read_bytes() == content


def test_csv_quotes_commas_quotes_and_newlines_in_names(tmp_path):
    root = tmp_path / "photos"
    names = ['comma, and "quotes".jpg', "new\nline.png", "plain.jpg"]
    for name in names:
        _photo(root / name, fmt="PNG")
    out = tmp_path / "captions.csv"
    caption_folder(FakeCaptioner(), root, out, progress=False)
    rows = _records(out, "csv")
    assert sorted(r["image"] for r in rows) == sorted(names)
    assert all(r["caption"].startswith("a picture, 6 by 4") and float(r["score"]) < 0 for r in rows)
    assert caption_folder(FakeCaptioner(), root, out, progress=False).already_done == 3


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_file_names_that_are_not_utf8_round_trip(tmp_path, fmt):
    root = tmp_path / "photos"
    root.mkdir()
    with open(os.path.join(os.fsencode(root), b"caf\xe9 latin1.png"), "wb") as file:
        Image.new("RGB", (3, 3)).save(file, "PNG")
    out = tmp_path / f"captions.{fmt}"
    assert caption_folder(FakeCaptioner(), root, out, progress=False).captioned == 1
    assert caption_folder(FakeCaptioner(), root, out, progress=False).already_done == 1


def test_results_file_read_and_encode_agree():
    results = ResultsFile("x.csv")
    record = FolderRecord("a,b.jpg", caption='say "cheese"', score=-2.5)
    assert results.encode(record) == b'"a,b.jpg","say ""cheese""",-2.5,\n'


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut_fraction=st.floats(0, 1), fmt=st.sampled_from(["jsonl", "csv"]))
def test_a_results_file_cut_anywhere_recovers_to_each_image_once(tmp_path_factory, cut_fraction, fmt):
    base = tmp_path_factory.mktemp("cut")
    root = base / "photos"
    for index in range(5):
        _photo(root / f"é {index}, x.png", fmt="PNG")
    out = base / f"captions.{fmt}"
    caption_folder(FakeCaptioner(), root, out, batch_size=2, progress=False)
    whole = _records(out, fmt)
    data = out.read_bytes()
    out.write_bytes(data[: int(len(data) * cut_fraction)])
    caption_folder(FakeCaptioner(), root, out, batch_size=2, progress=False)
    assert sorted(_records(out, fmt), key=lambda r: r["image"]) == sorted(whole, key=lambda r: r["image"])
