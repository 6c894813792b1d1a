"""Averaging a photo's grid with its mirror image's at inference (``eval.mirror_weight``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from captioner.api import Captioner
from captioner.encoders.base import EncoderConfig
from captioner.encoders.registry import build_encoder
from captioner.errors import CheckpointError
from captioner.models.captioning import CaptioningModel
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder


def small_model() -> CaptioningModel:
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="small_cnn", pretrained=False, image_size=64))
    decoder = ShowAttendTellDecoder(DecoderConfig(embed_dim=8, hidden_dim=8, attention_dim=8), 10, encoder.feature_dim)
    return CaptioningModel(encoder, decoder).eval()


def test_the_mirror_grid_is_flipped_back_and_mixed_in_with_its_weight():
    model = small_model()
    images = torch.randn(3, 3, 64, 64)
    rows, columns = model.encoder.grid_size(64)
    with torch.inference_mode():
        plain = model.encode(images)
        flipped = model.encode(images.flip(-1))
        mirrored = flipped.reshape(3, rows, columns, -1).flip(2).reshape(plain.shape)
        mixed = model.use_mirror_average(0.25).encode(images)
    torch.testing.assert_close(mixed, 0.75 * plain + 0.25 * mirrored)
    assert not torch.allclose(mixed, plain)


def test_training_never_mirrors_and_weights_outside_0_1_are_refused():
    model = small_model().use_mirror_average(0.5).train()
    images = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model.encode(images), model._encode(images))
    with pytest.raises(ValueError, match="between 0 and 1"):
        model.use_mirror_average(1.5)


def test_a_run_can_ask_for_it_in_its_config(tiny_run: Path, tiny_scenes: Path, tmp_path: Path):
    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    mirrored_run = tmp_path / "mirrored"
    shutil.copytree(tiny_run, mirrored_run)
    config = json.loads((mirrored_run / "config.json").read_text())
    config["eval"]["mirror_weight"] = 0.5
    (mirrored_run / "config.json").write_text(json.dumps(config))
    captioner = Captioner.from_pretrained(mirrored_run)
    assert captioner.model.mirror_weight == 0.5
    assert captioner.caption(image)[0].ok
    config["eval"]["mirror_weight"] = 2
    (mirrored_run / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="mirror_weight must be between 0 and 1"):
        Captioner.from_pretrained(mirrored_run)
