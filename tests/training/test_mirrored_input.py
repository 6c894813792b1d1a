"""Training on mirrored photos: which images may be mirrored, and how often."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from captioner.encoders import EncoderConfig, build_encoder
from captioner.encoders.cache import FeatureCache, build_feature_cache
from captioner.errors import ConfigError
from captioner.training.config import RunConfig
from captioner.training.inputs import MirroredInput
from captioner.training.loop import prepare_data

ASSETS = Path(__file__).resolve().parents[1] / "encoders" / "assets"
CAPTIONS = {
    "chelsea": ("a cat sits on a rug", "a cat looks up"),
    "coffee": ("a cup of coffee on the left of a plate", "a cup of coffee"),  # says "left": never mirrored
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    lines = []
    for name, captions in CAPTIONS.items():
        for split in ("train", "val"):
            shutil.copy(ASSETS / f"{name}.jpg", root / "images" / f"{name}_{split}.jpg")
            lines += [{"image": f"images/{name}_{split}.jpg", "caption": c, "split": split} for c in captions]
    (root / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return root


@pytest.fixture(scope="module")
def caches(dataset, tmp_path_factory) -> tuple[Path, Path]:
    from captioner.data.readers import load_records

    encoder = build_encoder(EncoderConfig("efficientnet_lite0", image_size=64))
    plain, mirrored = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("mirrored")
    build_feature_cache(load_records(dataset), encoder, plain, num_workers=0, progress=False)
    build_feature_cache(load_records(dataset, split="train"), encoder, mirrored, num_workers=0, progress=False,
                        mirrored=True)
    return plain, mirrored


def config_for(dataset: Path, plain: Path, mirrored: Path | None, probability: float = 0.5) -> RunConfig:
    config = RunConfig()
    config.data.path = str(dataset)
    config.data.min_word_count = 1
    config.data.feature_cache = str(plain)
    config.data.mirror_feature_cache = None if mirrored is None else str(mirrored)
    config.data.mirror_probability = probability
    config.encoder.image_size, config.encoder.layer = 64, "final"
    return config


def test_only_photos_whose_captions_never_say_left_or_right_are_mirrored(dataset, caches):
    plain, mirrored = caches
    data = prepare_data(config_for(dataset, plain, mirrored, probability=1.0), None, None)
    assert isinstance(data.train_input, MirroredInput)
    (cat,) = [r for r in data.train_records if "chelsea" in str(r.image_path)]
    assert data.train_input.mirrorable == {str(cat.image_id)}
    plain_cache, mirrored_cache = FeatureCache.open(plain), FeatureCache.open(mirrored)
    for record in data.train_records:
        read = data.train_input(record, 0)
        expected = mirrored_cache if "chelsea" in str(record.image_path) else plain_cache
        assert torch.equal(read, expected[expected.row_of(record)])
    for record in data.val_records:  # validation reads the photos as they are
        assert torch.equal(data.val_input(record, 0), plain_cache[plain_cache.row_of(record)])


def test_the_mirror_is_drawn_with_the_given_probability_from_the_seeded_generator(dataset, caches):
    plain, mirrored = caches
    data = prepare_data(config_for(dataset, plain, mirrored, probability=0.25), None, None)
    (cat,) = [r for r in data.train_records if "chelsea" in str(r.image_path)]
    plain_grid = FeatureCache.open(plain)[FeatureCache.open(plain).row_of(cat)]

    def draws() -> list[bool]:
        torch.manual_seed(0)
        return [not torch.equal(data.train_input(cat, 0), plain_grid) for _ in range(2000)]

    first = draws()
    assert first == draws()  # the same seed reads the same grids
    assert 0.22 < sum(first) / len(first) < 0.28


def test_mirror_settings_are_checked(dataset, caches):
    plain, mirrored = caches
    with pytest.raises(ConfigError, match="must hold mirrored photos"):
        prepare_data(config_for(dataset, plain, plain), None, None)
    with pytest.raises(ConfigError, match="must hold mirrored photos"):
        prepare_data(config_for(dataset, mirrored, mirrored), None, None)
    with pytest.raises(ConfigError, match="mirror_probability must be between 0 and 1"):
        RunConfig.from_dict({"data": {"mirror_feature_cache": str(mirrored), "mirror_probability": 1.5}})
    config = config_for(dataset, plain, mirrored)
    config.data.feature_cache = None
    with pytest.raises(ConfigError, match="needs data.feature_cache"):
        prepare_data(config, None, None)
