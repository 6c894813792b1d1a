"""Every dataset reader on small files written here, plus format detection and bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from captioner.data.readers import LoadReport, detect_format, load_records, normalize_split
from captioner.data.readers.coco import split_of_captions_file
from captioner.errors import DatasetFormatError


def _coco(tmp_path: Path, write_image, name: str = "captions_train2014.json",
          images_folder: str = "train2014") -> Path:
    annotations = {
        "images": [
            {"id": 42, "file_name": "COCO_42.jpg"},
            {"id": 7, "file_name": "COCO_7.jpg"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "caption": "A dog runs."},
            {"id": 2, "image_id": 7, "caption": "A cat  sleeps\n"},
            {"id": 3, "image_id": 42, "caption": "A brown dog."},
        ],
    }
    (tmp_path / "annotations").mkdir(exist_ok=True)
    path = tmp_path / "annotations" / name
    path.write_text(json.dumps(annotations))
    for file_name in ("COCO_42.jpg", "COCO_7.jpg"):
        write_image(tmp_path / images_folder / file_name)
    return path


def test_coco_reader_reads_ids_captions_split_and_sorts(tmp_path, write_image):
    _coco(tmp_path, write_image)
    records = load_records(tmp_path)
    assert [r.image_id for r in records] == [7, 42]
    assert records[0].captions == ("A cat sleeps",)  # whitespace normalized
    assert records[1].captions == ("A dog runs.", "A brown dog.")
    assert {r.split for r in records} == {"train"}
    assert records[1].image_path == tmp_path / "train2014" / "COCO_42.jpg"
    assert detect_format(tmp_path) == "coco"
    assert detect_format(tmp_path / "annotations" / "captions_train2014.json") == "coco"


def test_coco_reader_finds_images_under_images_split_and_reads_custom_splits(tmp_path, write_image):
    _coco(tmp_path, write_image, name="captions_test-novel.json", images_folder="images/test-novel")
    records = load_records(tmp_path / "annotations" / "captions_test-novel.json")
    assert {r.split for r in records} == {"test-novel"}
    assert records[0].image_path.parent == tmp_path / "images" / "test-novel"


@pytest.mark.parametrize(
    ("file_name", "split"),
    [("captions_train2014.json", "train"), ("captions_val2017.json", "val"),
     ("captions_dev.json", "val"), ("captions_test-novel.json", "test-novel")],
)
def test_split_names_come_from_coco_file_names(file_name, split):
    assert split_of_captions_file(Path(file_name)) == split


def test_split_argument_accepts_either_name(tmp_path, write_image):
    _coco(tmp_path, write_image, name="captions_val2014.json", images_folder="val2014")
    assert len(load_records(tmp_path, split="dev")) == 2
    assert len(load_records(tmp_path, split="val")) == 2
    with pytest.raises(DatasetFormatError, match="no images in split 'test'.*splits present: val"):
        load_records(tmp_path, split="test")


def test_normalize_split():
    assert [normalize_split(s) for s in ("train", "restval", "dev", "Validation", "test", "test-novel")] == [
        "train", "train", "val", "val", "test", "test-novel"]


def _karpathy(tmp_path: Path, write_image, coco: bool) -> Path:
    images = []
    for number, split in enumerate(["train", "restval", "val", "test"]):
        entry = {
            "filename": f"img{number}.jpg",
            "split": split,
            "sentences": [{"raw": f"Caption {number} a.", "tokens": []},
                          {"raw": f"Caption {number} b.", "tokens": []}],
        }
        if coco:
            entry.update(filepath="val2014", cocoid=100 + number)
            write_image(tmp_path / "val2014" / entry["filename"])
        else:
            write_image(tmp_path / "Flicker8k_Dataset" / entry["filename"])
        images.append(entry)
    path = tmp_path / ("dataset_coco.json" if coco else "dataset_flickr8k.json")
    path.write_text(json.dumps({"images": images, "dataset": "coco" if coco else "flickr8k"}))
    return path


def test_karpathy_coco_restval_is_train_and_ids_are_cocoids(tmp_path, write_image):
    _karpathy(tmp_path, write_image, coco=True)
    assert detect_format(tmp_path) == "karpathy"
    records = load_records(tmp_path)
    assert [(r.split, r.image_id) for r in records] == [
        ("test", 103), ("train", 100), ("train", 101), ("val", 102)]
    assert records[0].image_path == tmp_path / "val2014" / "img3.jpg"
    assert records[0].captions == ("Caption 3 a.", "Caption 3 b.")
    assert [r.image_id for r in load_records(tmp_path, split="train")] == [100, 101]


def test_karpathy_flickr_ids_are_file_names(tmp_path, write_image):
    path = _karpathy(tmp_path, write_image, coco=False)
    records = load_records(path, split="dev")
    assert [(r.image_id, r.image_path.parent.name) for r in records] == [("img2.jpg", "Flicker8k_Dataset")]


def _flickr8k(tmp_path: Path, write_image, image_folder: str = "images") -> Path:
    lines = []
    for name in ("b.jpg", "a.jpg", "c.jpg"):
        for number in (1, 0):  # out of order on purpose
            lines.append(f"{name}#{number}\t{name} caption {number} .")
    lines.append("unlisted.jpg#0\tnot in any split .")
    (tmp_path / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n\n")
    (tmp_path / "Flickr_8k.trainImages.txt").write_text("a.jpg\nb.jpg\n")
    (tmp_path / "Flickr_8k.devImages.txt").write_text("c.jpg\n")
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / image_folder / name)
    return tmp_path


@pytest.mark.parametrize("image_folder", ["images", "Flicker8k_Dataset"])
def test_flickr8k_reader(tmp_path, write_image, image_folder):
    _flickr8k(tmp_path, write_image, image_folder)
    assert detect_format(tmp_path) == "flickr8k"
    records = load_records(tmp_path)
    assert [(r.split, r.image_id) for r in records] == [("train", "a.jpg"), ("train", "b.jpg"), ("val", "c.jpg")]
    assert records[0].captions == ("a.jpg caption 0 .", "a.jpg caption 1 .")  # ordered by #N
    assert records[0].image_path == tmp_path / image_folder / "a.jpg"
    assert [r.image_id for r in load_records(tmp_path / "Flickr8k.token.txt", split="dev")] == ["c.jpg"]


def test_flickr8k_malformed_line_names_file_and_line(tmp_path, write_image):
    _flickr8k(tmp_path, write_image)
    token_file = tmp_path / "Flickr8k.token.txt"
    token_file.write_text(token_file.read_text() + "a.jpg no tab or number\n")
    with pytest.raises(DatasetFormatError) as caught:
        load_records(tmp_path)
    message = str(caught.value)
    assert "Flickr8k.token.txt line" in message and "NAME.jpg#N<TAB>caption" in message
    assert "\n" not in message


def test_folder_reader_csv_with_several_rows_per_image_and_splits(tmp_path, write_image):
    write_image(tmp_path / "one.png")
    write_image(tmp_path / "sub" / "two.jpg")
    (tmp_path / "captions.csv").write_text(
        "image,caption,split\n"
        'one.png,"a red square, small",train\n'
        "one.png,a square,train\n"
        "sub/two.jpg,another picture,dev\n"
    )
    assert detect_format(tmp_path) == "folder"
    records = load_records(tmp_path)
    assert [(r.split, r.image_id, r.captions) for r in records] == [
        ("train", "one.png", ("a red square, small", "a square")),
        ("val", "sub/two.jpg", ("another picture",)),
    ]
    assert records[1].image_path == tmp_path / "sub" / "two.jpg"


def test_folder_reader_jsonl_without_split_is_train(tmp_path, write_image):
    write_image(tmp_path / "x.png")
    write_image(tmp_path / "y.png")
    (tmp_path / "captions.jsonl").write_text(
        '{"image": "y.png", "caption": "why"}\n\n'
        '{"image": "x.png", "captions": ["ex one", "ex two"]}\n'
    )
    records = load_records(tmp_path)
    assert [(r.split, r.image_id, r.captions) for r in records] == [
        ("train", "x.png", ("ex one", "ex two")), ("train", "y.png", ("why",))]


def test_missing_images_are_skipped_with_a_warning_and_counted(tmp_path, write_image, caplog):
    _coco(tmp_path, write_image)
    (tmp_path / "train2014" / "COCO_7.jpg").unlink()
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="captioner.data"):
        records = load_records(tmp_path, report=report)
    assert [r.image_id for r in records] == [42]
    assert report.missing_images == [str(tmp_path / "train2014" / "COCO_7.jpg")]
    assert "skipped 1 of 2 images" in caplog.text and "COCO_7.jpg" in caplog.text


def test_all_images_missing_is_an_error_naming_the_file(tmp_path, write_image):
    write_image(tmp_path / "present.png")
    (tmp_path / "captions.csv").write_text("image,caption\nnot_here.png,a\nnor_here.png,b\n")
    with pytest.raises(DatasetFormatError, match=r"captions\.csv: none of its 2 images exist"):
        load_records(tmp_path)


def test_empty_captions_are_skipped_and_captionless_images_dropped(tmp_path, write_image, caplog):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png")
    (tmp_path / "captions.csv").write_text("image,caption\na.png,  \na.png,a fine caption\nb.png,\n")
    report = LoadReport()
    with caplog.at_level(logging.WARNING, logger="captioner.data"):
        records = load_records(tmp_path, report=report)
    assert [(r.image_id, r.captions) for r in records] == [("a.png", ("a fine caption",))]
    assert report.empty_captions == 2 and report.images_without_captions == ["b.png"]
    assert "skipped 2 empty caption(s)" in caplog.text
    assert "dropped 1 image(s) left without captions: b.png" in caplog.text


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"images": [', r"captions_train2014\.json is not valid JSON .*line 1"),
        (b'{"images": "\xff\xfe"}', r"captions_train2014\.json is not valid UTF-8"),
        (b'{"images": []}', r'expected a COCO captions file with "images" and "annotations"'),
    ],
)
def test_broken_json_is_one_clear_line(tmp_path, content, expected):
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "captions_train2014.json").write_bytes(content)
    with pytest.raises(DatasetFormatError, match=expected) as caught:
        load_records(tmp_path)
    assert "\n" not in str(caught.value)


def test_csv_without_the_needed_columns(tmp_path):
    (tmp_path / "captions.csv").write_text("file,text\na.png,hello\n")
    with pytest.raises(DatasetFormatError, match="image,caption"):
        load_records(tmp_path)


def test_jsonl_malformed_line(tmp_path):
    (tmp_path / "captions.jsonl").write_text('{"image": "a.png", "caption": "ok"}\n{oops\n')
    with pytest.raises(DatasetFormatError, match=r"captions\.jsonl line 2: not valid JSON"):
        load_records(tmp_path)


def test_unknown_layout_lists_the_known_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetFormatError) as caught:
        load_records(tmp_path)
    message = str(caught.value)
    for name in ("coco", "karpathy", "flickr8k", "folder"):
        assert name in message
    with pytest.raises(DatasetFormatError, match="unknown dataset format 'voc'.*known formats"):
        load_records(tmp_path, fmt="voc")
    with pytest.raises(DatasetFormatError, match="does not exist"):
        load_records(tmp_path / "nope")
