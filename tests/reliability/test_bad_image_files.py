"""The bad-input corpus through the loader, `captioner caption`, `caption-dir` and dataset reading.

Every case must end as a caption or as a report naming the file: no traceback, no crash, and
every good picture still captioned.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.cli import main
from captioner.data.images import load_rgb_image
from captioner.errors import BadImageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import PERMISSION_SKIP_REASON, RUNNING_AS_ROOT, photo_like  # noqa: E402


def test_the_corpus_has_at_least_200_cases_of_both_kinds(corpus):
    _, cases = corpus
    assert len(cases) >= 200
    assert sum(c.readable for c in cases) >= 25 and sum(not c.readable for c in cases) >= 175
    assert len({c.path for c in cases}) == len(cases)


def test_the_loader_reads_every_good_case_and_names_every_bad_one(corpus):
    root, cases = corpus
    wrong = []
    for case in cases:
        path = root / case.path
        try:
            image = load_rgb_image(path)
        except BadImageError as error:
            if case.readable or Path(case.path).name not in str(error):
                wrong.append(f"{case.path} ({case.kind}): {error}")
            continue
        if not case.readable:
            wrong.append(f"{case.path} ({case.kind}) loaded but must be refused")
        elif image.mode != "RGB" or (case.size and image.size != case.size):
            wrong.append(f"{case.path} ({case.kind}): {image.mode} {image.size}, expected RGB {case.size}")
        elif case.pixel:
            (x, y), expected = case.pixel
            got = image.getpixel((x, y))
            if max(abs(int(a) - int(b)) for a, b in zip(got, expected)) > 8:
                wrong.append(f"{case.path} ({case.kind}): pixel {got}, expected {expected}")
    assert not wrong, "\n".join(wrong)


def test_messages_say_what_is_wrong(corpus):
    root, _ = corpus
    expected = {
        "empty/zero_bytes.jpg": "empty (0 bytes)",
        "truncated/png_": "truncated",
        "junk/web_page.png": "not an image format",
        "bombs/claims_100k_x_100k.png": "decompression bombs",
        "bombs/claims_10k_x_10k.png": "decompression bombs",
        "links/dangling.jpg": "broken symbolic link",
        "links/loop_a.jpg": "symbolic link loop",
        "links/pipe.jpg": "not a regular file",
        "album.jpg": "it is a folder",
    }
    for prefix, phrase in expected.items():
        path = next(p for p in sorted(root.rglob("*")) if p.relative_to(root).as_posix().startswith(prefix))
        with pytest.raises(BadImageError, match=re.escape(phrase)):
            load_rgb_image(path)


def test_caption_command_captions_the_good_and_names_the_bad(tiny_run, corpus, capsys):
    root, cases = corpus
    paths = [str(root / case.path) for case in cases]
    status = main(["caption", *paths, "--checkpoint", str(tiny_run), "--batch-size", "32"])
    out, err = capsys.readouterr()
    assert status == 1
    captioned = [line.split("\t") for line in out.splitlines()]
    assert [source for source, _ in captioned] == [p for p, c in zip(paths, cases) if c.readable]
    assert all(len(line) == 2 for line in captioned)  # (a 1-epoch model may end a caption at once)
    reports = [line for line in err.splitlines() if line.startswith("captioner: skipped")]
    assert len(reports) == sum(not c.readable for c in cases)
    for report, (path, case) in zip(reports, [(p, c) for p, c in zip(paths, cases) if not c.readable]):
        assert path in report, case.kind
    assert "Traceback" not in err


def test_caption_dir_records_every_listed_file_once(tiny_run, corpus, tmp_path, capsys):
    root, cases = corpus
    out = tmp_path / "captions.jsonl"
    command = ["caption-dir", str(root), "--out", str(out), "--checkpoint", str(tiny_run), "--batch-size", "16",
               "--json", "--no-progress"]
    assert main(command) == 1
    summary = json.loads(capsys.readouterr().out)
    listed = {c.path: c for c in cases if c.listed}
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["image"] for r in records] == sorted(listed)  # the hidden folder is not listed
    for record in records:
        case = listed[record["image"]]
        if case.readable:
            assert isinstance(record["caption"], str) and isinstance(record["score"], float), case.kind
        else:
            assert Path(case.path).name in record["error"], case.kind
    good = sum(c.readable for c in listed.values())
    assert (summary["found"], summary["captioned"], len(summary["failed"])) == (len(listed), good, len(listed) - good)
    before = out.read_bytes()
    assert main(command) == 1  # the failures are still reported, and nothing is redone
    again = json.loads(capsys.readouterr().out)
    assert again["already_done"] == len(listed) and len(again["earlier_failures"]) == len(listed) - good
    assert out.read_bytes() == before


def test_dataset_reading_and_evaluation_skip_bad_images_by_name(tiny_run, corpus, tmp_path, capsys, caplog):
    from captioner.api import Captioner
    from captioner.data.readers import LoadReport, load_records

    root, cases = corpus
    table = root / "captions.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "caption"])
        for case in cases:
            writer.writerow([case.path, "a small picture"])
        for missing in ("gone/one.jpg", "gone/two.png"):
            writer.writerow([missing, "a picture that is not there"])
    try:
        report = LoadReport()
        records = load_records(root, report=report)
        assert sorted(r.image_id for r in records) == sorted(c.path for c in cases)
        assert len(report.missing_images) == 2
        assert main(["data", "stats", str(root), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["missing_images"] == 2

        evaluation = Captioner.from_pretrained(tiny_run).evaluate(root, split="train", meteor=False, progress=False)
        assert sorted(p.record.image_id for p in evaluation.predictions) == sorted(c.path for c in cases if c.readable)
        assert len(evaluation.skipped) == sum(not c.readable for c in cases)
        for case in cases:
            if not case.readable:
                assert any(str(root / case.path) in line for line in evaluation.skipped), case.kind
    finally:
        table.unlink()


@pytest.mark.skipif(RUNNING_AS_ROOT, reason=PERMISSION_SKIP_REASON)
def test_a_file_without_read_permission_is_reported(tmp_path):
    locked = tmp_path / "locked.jpg"
    photo_like(8, 8).save(locked)
    locked.chmod(0)
    try:
        with pytest.raises(BadImageError, match="permission denied"):
            load_rgb_image(locked)
    finally:
        locked.chmod(0o644)


def test_exif_orientation_is_applied_in_captioning_too(tiny_run, corpus):
    from captioner.api import Captioner

    root, _ = corpus
    path = root / "modes" / "exif_rotated.jpg"
    with Image.open(path) as stored:
        assert stored.size == (40, 20)
        upright = stored.convert("RGB").transpose(Image.Transpose.ROTATE_270)  # what orientation 6 asks for
    captioner = Captioner.from_pretrained(tiny_run)
    from_file, by_hand = captioner.caption([path, upright])
    assert from_file.image_size == (20, 40) == by_hand.image_size
    np.testing.assert_allclose(from_file.attention, by_hand.attention, atol=1e-5)
    assert from_file.score == pytest.approx(by_hand.score, abs=1e-5)
