"""Fuzzing the caption/annotation files every reader takes: COCO JSON, Karpathy JSON, Flickr8k
token files, folder captions.csv / captions.jsonl.

Damaged content must give records or a ``CaptionerError`` whose one-line message names the file
(or its dataset folder), never another exception type. The regression cases at the end are
inputs that used to escape as TypeError, ValueError or RecursionError.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner.cli import main
from captioner.data.readers import load_records
from captioner.errors import CaptionerError, DatasetFormatError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import (  # noqa: E402
    ANNOTATION_FORMATS,
    FOLDER_JSONL,
    coco_dataset,
    folder_csv_dataset,
    folder_jsonl_dataset,
    karpathy_dataset,
)

# FUZZ_EXAMPLES=2000 for a long run; the default keeps the whole folder well under a minute.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))

@pytest.fixture(autouse=True)
def _quiet_reader_warnings():
    # Readers warn about every skipped image; thousands of fuzzed files would flood the log.
    logging.getLogger("captioner.data").setLevel(logging.ERROR)
    yield
    logging.getLogger("captioner.data").setLevel(logging.NOTSET)


def _check(root: Path) -> None:
    try:
        records = load_records(root)
    except CaptionerError as error:
        message = str(error)
        assert str(root) in message, message
        assert "\n" not in message
        return
    assert records and all(r.captions and all(isinstance(c, str) and c for c in r.captions) for r in records)


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 5))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        operation = draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        if operation == "set" and data:
            data[position] = draw(st.integers(0, 255))
        elif operation == "insert":
            data[position:position] = draw(st.sampled_from([b'"', b",", b"\t", b"#", b"\n", b"{", b"]", b"\\", b"\xff", b"\0"]))
        elif operation == "delete" and data:
            del data[position]
        elif operation == "cut":
            data = data[:position]
    return bytes(data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@st.composite
def mutated_json(draw: st.DrawFn, original: Any) -> Any:
    """``original`` with a few values replaced by arbitrary JSON, or keys deleted."""
    value = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(value)))
        replacement = draw(JSON_VALUES)
        if not path:
            value = replacement
            continue
        parent = value
        try:
            for key in path[:-1]:
                parent = parent[key]
            if isinstance(parent, dict) and draw(st.booleans()):
                parent.pop(path[-1], None)
            else:
                parent[path[-1]] = replacement
        except (KeyError, IndexError, TypeError):
            pass  # an earlier edit removed that path
    return value


@pytest.mark.parametrize("fmt", sorted(ANNOTATION_FORMATS))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_annotation_bytes_give_records_or_a_clear_error(tmp_path_factory, fmt, data):
    write, original = ANNOTATION_FORMATS[fmt]
    content = data.draw(mutated_bytes(original))
    _check(write(tmp_path_factory.mktemp(fmt), content))


@pytest.mark.parametrize("fmt", ["coco", "karpathy", "folder_jsonl"])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_annotation_structures_give_records_or_a_clear_error(tmp_path_factory, fmt, data):
    write, original = ANNOTATION_FORMATS[fmt]
    if fmt == "folder_jsonl":
        lines = [data.draw(mutated_json(json.loads(line))) for line in FOLDER_JSONL.splitlines()]
        content = "\n".join(json.dumps(line) for line in lines).encode("utf-8", "surrogatepass")
    else:
        content = json.dumps(data.draw(mutated_json(json.loads(original)))).encode("utf-8", "surrogatepass")
    _check(write(tmp_path_factory.mktemp(fmt), content))


def _coco_with(images: list, annotations: list) -> bytes:
    return json.dumps({"images": images, "annotations": annotations}).encode()


REGRESSIONS = {
    "coco id null beside an int id (sorting failed)": (
        coco_dataset, _coco_with([{"id": None, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
                          [{"image_id": None, "caption": "x"}, {"image_id": 2, "caption": "y"}])),
    "coco id that is a list (unhashable)": (
        coco_dataset, _coco_with([{"id": [1], "file_name": "a.jpg"}], [{"image_id": 1, "caption": "x"}])),
    "coco annotation image_id that is an object": (
        coco_dataset, _coco_with([{"id": 1, "file_name": "a.jpg"}], [{"image_id": {"a": 1}, "caption": "x"}])),
    "coco file_name that is a number (sorting failed)": (
        coco_dataset, _coco_with([{"id": 1, "file_name": 7}, {"id": 2, "file_name": "b.jpg"}],
                          [{"image_id": 1, "caption": "x"}, {"image_id": 2, "caption": "y"}])),
    "coco empty file_name (the image folder became an image)": (
        coco_dataset, _coco_with([{"id": 1, "file_name": ""}], [{"image_id": 1, "caption": "x"}])),
    "karpathy cocoid null beside an int": (
        karpathy_dataset, json.dumps({"images": [
            {"filename": "a.jpg", "filepath": "images", "split": "train", "sentences": [{"raw": "x"}], "cocoid": None},
            {"filename": "b.jpg", "filepath": "images", "split": "train", "sentences": [{"raw": "y"}], "cocoid": 3}]}).encode()),
    "karpathy filepath that is a list": (
        karpathy_dataset, json.dumps({"images": [
            {"filename": "a.jpg", "filepath": ["images"], "split": "train", "sentences": [{"raw": "x"}]}]}).encode()),
    "CSV image in a folder whose name holds a NUL byte (ValueError)": (
        folder_csv_dataset, b"image,caption\nima\0ges/a.jpg,a dog\n"),
    "CSV image in a folder whose name holds a newline (a two-line message)": (
        folder_csv_dataset, b'image,caption\n"new\nfolder/a.jpg",a dog\n'),
    "CSV header with a newline in a column name (a two-line message)": (folder_csv_dataset, b'"ima\nge",caption\na.jpg,x\n'),
    "JSON nested 100,000 deep (RecursionError)": (coco_dataset, b"[" * 100_000 + b"]" * 100_000),
    "JSON integer of 5,000 digits (ValueError)": (coco_dataset, b'{"images": [{"id": ' + b"1" * 5000 + b"}]}"),
    "JSONL line nested 100,000 deep": (folder_jsonl_dataset, b"[" * 100_000 + b"]" * 100_000 + b"\n"),
    "JSONL line with a 5,000-digit integer": (folder_jsonl_dataset, b'{"image": "images/a.jpg", "caption": ' + b"9" * 5000 + b"}\n"),
}


@pytest.mark.parametrize("case", sorted(REGRESSIONS))
def test_inputs_that_used_to_escape_are_now_one_clear_error(tmp_path, case):
    write, content = REGRESSIONS[case]
    root = write(tmp_path / "dataset", content)
    with pytest.raises(DatasetFormatError) as raised:
        load_records(root)
    assert str(root) in str(raised.value) and "\n" not in str(raised.value)


def test_data_stats_reports_a_damaged_file_in_one_line(tmp_path, capsys):
    root = coco_dataset(tmp_path / "dataset", b"[" * 100_000 + b"]" * 100_000)
    assert main(["data", "stats", str(root)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "captions_train2014.json" in err and "Traceback" not in err
