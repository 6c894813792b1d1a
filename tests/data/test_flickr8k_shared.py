"""The Flickr8k reader on the real dataset in ../shared (skipped where it is absent)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from captioner.data.readers import LoadReport, load_records

SHARED_FLICKR8K = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets" / "flickr8k"

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def flickr8k():
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").is_file():
        pytest.skip(f"needs ../shared/datasets/flickr8k (not found at {SHARED_FLICKR8K.resolve()})")
    report = LoadReport()
    return load_records(SHARED_FLICKR8K, report=report), report


def test_real_flickr8k_has_the_official_train_and_dev_splits(flickr8k):
    records, report = flickr8k
    assert Counter(r.split for r in records) == {"train": 5997, "val": 1000}
    assert all(len(r.captions) == 5 for r in records)
    assert report.missing_images == [] and report.empty_captions == 0
    assert len({r.image_id for r in records}) == 6997
    assert all(isinstance(r.image_id, str) and r.image_id.endswith(".jpg") for r in records)


def test_real_flickr8k_dev_split_and_order(flickr8k):
    records, _ = flickr8k
    dev = load_records(SHARED_FLICKR8K, split="dev")
    assert dev == [r for r in records if r.split == "val"]
    assert [r.image_id for r in dev] == sorted(r.image_id for r in dev)
    first = dev[0]
    assert first.image_path.is_file()
    assert first.captions[0] == " ".join(first.captions[0].split())
