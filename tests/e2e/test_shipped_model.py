"""The model shipped in the package: loads offline, captions real photos, keeps its promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from captioner.api import Captioner
from captioner.pretrained import DEFAULT_MODEL, PRETRAINED_DIR, available_models

ROOT = Path(__file__).resolve().parents[2]
PHOTOS = sorted((ROOT / "examples" / "photos").glob("*.jpg"))
FLICKR8K = ROOT / ".." / "shared" / "datasets" / "flickr8k"


@pytest.fixture(scope="module")
def shipped() -> Captioner:
    torch.set_num_threads(2)
    return Captioner.from_pretrained()


def test_the_default_model_ships_small_and_complete():
    assert DEFAULT_MODEL in available_models()
    directory = PRETRAINED_DIR / DEFAULT_MODEL
    for name in ("ensemble.json", "metrics.json", "README.md"):
        assert (directory / name).is_file(), name
    members = [directory / m["path"] for m in json.loads((directory / "ensemble.json").read_text())["members"]]
    for member in members:
        for name in ("model.safetensors", "config.json", "vocab.json"):
            assert (member / name).is_file(), (member, name)
    assert sum((member / "model.safetensors").stat().st_size for member in members) < 30e6


def test_the_single_lite0_model_still_ships_by_name():
    directory = PRETRAINED_DIR / "flickr8k-lite0"
    assert "flickr8k-lite0" in available_models()
    assert (directory / "model.safetensors").stat().st_size < 30e6
    (result,) = Captioner.from_pretrained("flickr8k-lite0").caption(ROOT / "examples" / "photos" / "dog_german_shepherd.jpg")
    assert "dog" in result.words, result.caption


def test_example_photos_get_plain_english_captions_with_attention(shipped):
    assert len(PHOTOS) >= 6
    results = shipped.caption(PHOTOS, beam_size=3)
    for photo, result in zip(PHOTOS, results):
        assert result.ok, result.error
        assert 3 <= len(result.words) <= 20, (photo.name, result.caption)
        assert not {"<unk>", "<pad>", "<start>", "<end>"} & set(result.words)
        assert result.attention.shape == (len(result.words), 7, 7)
        np.testing.assert_allclose(result.attention.sum(axis=(1, 2)), 1.0, atol=1e-3)


def test_shipped_captions_never_end_where_flickr8k_captions_never_end(shipped):
    # flickr8k-lite0's astronaut caption without the rule ends "... playing with a red" (none of
    # the ensemble's example captions does).
    endings = shipped.vocabulary.endings
    assert endings is not None and {"a", "the", "of", "with"} <= endings.words
    for guidance in (False, True):
        for result in shipped.caption(PHOTOS, beam_size=3, guidance=guidance):
            previous, last = (["<start>", *result.words])[-2:]
            assert not endings.dangling(previous, last), result.caption
    single = Captioner.from_pretrained("flickr8k-lite0")
    assert single.vocabulary.endings == endings
    (unruled,) = single.caption(ROOT / "examples" / "photos" / "astronaut.jpg", guidance=False,
                                block_dangling_endings=False)
    assert unruled.words[-2:] == ["a", "red"], unruled.caption


def test_a_dog_photo_is_captioned_as_a_dog(shipped):
    (result,) = shipped.caption(ROOT / "examples" / "photos" / "dog_german_shepherd.jpg")
    assert "dog" in result.words, result.caption


@pytest.mark.skipif(not FLICKR8K.is_dir(), reason="needs ../shared/datasets/flickr8k (Flickr8k dev photos) to re-evaluate")
def test_stored_dev_metrics_match_a_re_evaluation_on_the_first_dev_images(shipped):
    from captioner.data.readers import load_records
    from captioner.training.evaluation import caption_records, score_predictions
    from captioner.training.inputs import InputKind, PixelInput

    metrics = json.loads((PRETRAINED_DIR / DEFAULT_MODEL / "metrics.json").read_text())
    measured_in = metrics.get("flickr8k_dev_from_photos_precision", "fp32")
    if shipped.precision != measured_in:
        pytest.skip(f"the stored metrics were measured in {measured_in}; this machine runs the model in "
                    f"{shipped.precision} (no kernels for {measured_in})")
    stored = metrics["flickr8k_dev_first_100_beam3"]
    records = load_records(FLICKR8K, split="val")[:100]
    predictions = caption_records(shipped.model, records, PixelInput(shipped.model.encoder.preprocess),
                                  InputKind.PIXELS, shipped.vocabulary, shipped.default_settings(3),
                                  shipped.device, batch_size=50, progress=False)
    scores = score_predictions(predictions, meteor=False).corpus
    for name, value in stored.items():
        assert scores[name] == pytest.approx(value, abs=1e-4), name
