"""The CNN's CPU inference in small chunks gives the features of one whole batch."""

from __future__ import annotations

import torch

from captioner.encoders.base import EncoderConfig
from captioner.encoders.registry import build_encoder
from captioner.models import captioning
from captioner.models.captioning import CaptioningModel
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder


def test_chunked_inference_equals_one_batch_and_training_is_not_chunked(monkeypatch):
    torch.manual_seed(0)
    encoder = build_encoder(EncoderConfig(name="small_cnn", pretrained=False, image_size=64))
    decoder = ShowAttendTellDecoder(DecoderConfig(embed_dim=8, hidden_dim=8, attention_dim=8), 10, encoder.feature_dim)
    model = CaptioningModel(encoder, decoder).eval()
    images = torch.randn(7, 3, 64, 64)
    calls = []
    original = encoder.forward
    monkeypatch.setattr(encoder, "forward", lambda x: calls.append(x.size(0)) or original(x))
    with torch.inference_mode():
        chunked = model.encode(images)
        assert calls == [2, 2, 2, 1]
        monkeypatch.setattr(captioning, "CPU_INFERENCE_CHUNK", 100)
        whole = model.encode(images)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
    calls.clear()
    monkeypatch.setattr(captioning, "CPU_INFERENCE_CHUNK", 2)
    model.train()
    model.encode(images)
    assert calls == [7]
