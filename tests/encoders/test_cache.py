"""Feature cache: round trip, unreadable images, reuse, refusal, resume, trunk-only."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch

from captioner.data.images import load_rgb_image
from captioner.data.records import CaptionRecord
from captioner.encoders import EncoderConfig, build_encoder
from captioner.encoders import cache as cache_module
from captioner.encoders.cache import FeatureCache, build_feature_cache
from captioner.errors import BadImageError, CheckpointError, ConfigError

IMAGE_SIZE = 96  # small inputs keep the tests fast; lite0 gives a 3 x 3 grid


@pytest.fixture(scope="module")
def encoder():
    return build_encoder(EncoderConfig("efficientnet_lite0", image_size=IMAGE_SIZE))


@pytest.fixture()
def records(tmp_path, photo_paths):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, path in photo_paths.items():
        shutil.copy(path, folder / f"{name}.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    names = ["chelsea", "broken", "coffee"]
    return [
        CaptionRecord(folder / f"{name}.jpg", (f"a {name}",), "train", f"{name}.jpg")
        for name in names
    ]


def direct_features(encoder, path):
    with torch.no_grad():
        return encoder(encoder.preprocess(load_rgb_image(path))[None])[0]


def test_round_trip_with_an_unreadable_image(tmp_path, encoder, records):
    out = tmp_path / "cache"
    report = build_feature_cache(records, encoder, out, batch_size=2, num_workers=0, progress=False)
    broken = str(records[1].image_path.resolve())
    assert report.shape == (3, 9, 1280) and report.num_encoded == 2 and not report.reused
    assert list(report.bad_images) == [broken] and "broken.jpg" in report.bad_images[broken]

    cache = FeatureCache.open(out)
    assert len(cache) == 3 and cache.config == encoder.config and cache.feature_dim == 1280
    assert np.load(out / "features.npy", mmap_mode="r").dtype == np.float16
    for record in (records[0], records[2]):
        assert record in cache
        cached = cache[cache.row_of(record)]
        assert cached.dtype == torch.float32 and cached.shape == (9, 1280)
        torch.testing.assert_close(
            cached, direct_features(encoder, record.image_path), atol=4e-3, rtol=1e-3
        )
    assert records[1] not in cache
    with pytest.raises(BadImageError, match="broken.jpg"):
        cache.row_of(records[1])
    index = json.loads((out / "index.json").read_text())
    assert [entry["status"] == "ok" for entry in index["images"]] == [True, False, True]
    assert cache.bad_images.keys() == {broken}
    stranger = CaptionRecord(tmp_path / "elsewhere.jpg", ("x",), "train", "elsewhere.jpg")
    with pytest.raises(KeyError):  # also a CheckpointError naming the image
        cache.row_of(stranger)


def test_existing_cache_is_reused_and_a_mismatched_one_refused(
    tmp_path, encoder, records, monkeypatch
):
    out = tmp_path / "cache"
    build_feature_cache(records, encoder, out, num_workers=0, progress=False)

    def must_not_encode(*args, **kwargs):
        raise AssertionError("the encoder ran again")

    monkeypatch.setattr(encoder, "forward", must_not_encode)
    report = build_feature_cache(records, encoder, out, num_workers=0, progress=False)
    assert report.reused and report.num_encoded == 0 and len(report.bad_images) == 1
    monkeypatch.undo()

    with pytest.raises(CheckpointError) as caught:
        build_feature_cache(records[:2], encoder, out, num_workers=0, progress=False)
    assert "differs in num_images, images_sha256, shape" in str(caught.value)
    other = build_encoder(EncoderConfig("efficientnet_lite0", layer="14x14", image_size=IMAGE_SIZE))
    with pytest.raises(CheckpointError) as caught:
        build_feature_cache(records, other, out, num_workers=0, progress=False)
    message = str(caught.value)
    assert (
        "\n" not in message
        and "efficientnet_lite0/final" in message
        and "efficientnet_lite0/stage5" in message
    )
    assert "pass another --out or delete" in message


def test_interrupted_build_resumes(tmp_path, encoder, records, monkeypatch):
    out = tmp_path / "cache"
    real_getitem = cache_module._ImageFiles.__getitem__

    def interrupt_at_row_2(self, index):
        if self.rows[index] == 2:
            raise KeyboardInterrupt
        return real_getitem(self, index)

    monkeypatch.setattr(cache_module._ImageFiles, "__getitem__", interrupt_at_row_2)
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(records, encoder, out, batch_size=1, num_workers=0, progress=False)
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="unfinished"):
        FeatureCache.open(out)
    report = build_feature_cache(records, encoder, out, batch_size=1, num_workers=0, progress=False)
    assert report.resumed_from_row == 2 and report.num_encoded == 1 and len(report.bad_images) == 1
    cache = FeatureCache.open(out)
    for record in (records[0], records[2]):
        torch.testing.assert_close(
            cache[cache.row_of(record)],
            direct_features(encoder, record.image_path),
            atol=4e-3,
            rtol=1e-3,
        )


def test_trunk_only_cache_feeds_the_fine_tuned_head(tmp_path, records):
    encoder = build_encoder(
        EncoderConfig("efficientnet_lite0", image_size=IMAGE_SIZE, fine_tune_blocks=1)
    )
    out = tmp_path / "trunk"
    report = build_feature_cache(
        records, encoder, out, num_workers=0, trunk_only=True, progress=False
    )
    assert report.shape == (3, 320, 3, 3)
    cache = FeatureCache.open(out)
    assert cache.trunk_only and cache.encoder_config.fine_tune_blocks == 1
    activations = cache[cache.row_of(records[2])]
    encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            encoder.forward_head(activations[None])[0],
            direct_features(encoder, records[2].image_path),
            atol=3e-2,
            rtol=3e-3,
        )


def test_workers_share_the_file_instead_of_copying_the_array(tmp_path, encoder, records):
    out = tmp_path / "cache"
    build_feature_cache(records, encoder, out, batch_size=2, num_workers=2, progress=False)
    cache = FeatureCache.open(out)
    expected = cache[0]
    assert isinstance(cache._array(), np.memmap)
    payload = pickle.dumps(cache)
    assert len(payload) < 3 * 9 * 1280  # the array (3 x 9 x 1280 float16) is not in it
    torch.testing.assert_close(pickle.loads(payload)[0], expected)


def test_refusals(tmp_path, records):
    with pytest.raises(ConfigError, match="cannot be cached"):
        build_feature_cache(
            records, build_encoder(EncoderConfig("small_cnn", image_size=64)), tmp_path / "x"
        )
    with pytest.raises(CheckpointError, match="not a feature cache"):
        FeatureCache.open(tmp_path)


def test_cuda_cache_matches_cpu_within_fp16(tmp_path, records):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: checks the channels-last + fp16 autocast path of the cache")
    encoder = build_encoder(EncoderConfig("efficientnet_lite0", image_size=IMAGE_SIZE))
    cpu = build_feature_cache(records, encoder, tmp_path / "cpu", num_workers=0, progress=False)
    gpu = build_feature_cache(
        records, encoder, tmp_path / "gpu", num_workers=0, device="cuda", progress=False
    )
    assert cpu.shape == gpu.shape
    on_cpu, on_gpu = FeatureCache.open(tmp_path / "cpu"), FeatureCache.open(tmp_path / "gpu")
    torch.testing.assert_close(on_gpu[0], on_cpu[0], atol=5e-2, rtol=2e-2)


def test_mirrored_cache_holds_the_features_of_the_flipped_photos(tmp_path, encoder, records):
    out = tmp_path / "mirrored"
    build_feature_cache(records, encoder, out, num_workers=0, progress=False, mirrored=True)
    mirrored = FeatureCache.open(out)
    assert mirrored.mirrored
    for record in (records[0], records[2]):
        pixels = encoder.preprocess(load_rgb_image(record.image_path))
        with torch.no_grad():
            expected = encoder(torch.flip(pixels, dims=[2])[None])[0]
        torch.testing.assert_close(mirrored[mirrored.row_of(record)], expected, atol=4e-3, rtol=1e-3)
        assert not torch.allclose(expected, direct_features(encoder, record.image_path), atol=1e-2)
    with pytest.raises(CheckpointError, match="of the mirrored photos.*differs in mirrored"):
        build_feature_cache(records, encoder, out, num_workers=0, progress=False)
    plain = tmp_path / "plain"
    build_feature_cache(records, encoder, plain, num_workers=0, progress=False)
    assert not FeatureCache.open(plain).mirrored
    assert "mirrored" not in json.loads((plain / "index.json").read_text())["fingerprint"]
