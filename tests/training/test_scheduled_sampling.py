"""Scheduled sampling: the decoder reads its own words with the scheduled probability."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.training.config import RunConfig
from captioner.training.loop import scheduled_sampling_probability
from tests.conftest import TINY_TRAINING


def make_decoder() -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=8, hidden_dim=12, attention_dim=6, dropout=0.0)
    return ShowAttendTellDecoder(config, vocab_size=20, feature_dim=10)


def test_probability_zero_is_teacher_forcing_and_tiny_probability_matches_it() -> None:
    decoder = make_decoder()
    regions, captions = torch.randn(4, 9, 10), torch.randint(0, 20, (4, 7))
    forced = decoder(regions, captions)
    # p > 0 takes the step-by-step path; with p ~ 0 it must compute exactly what forcing does.
    nearly = decoder(regions, captions, sampling_probability=1e-12)
    torch.testing.assert_close(nearly.logits, forced.logits)
    torch.testing.assert_close(nearly.alphas, forced.alphas)


def test_probability_one_ignores_the_reference_words_after_the_first() -> None:
    decoder = make_decoder()
    regions, captions = torch.randn(4, 9, 10), torch.randint(0, 20, (4, 7))
    other = captions.clone()
    other[:, 1:] = torch.randint(0, 20, (4, 6))
    torch.manual_seed(1)
    own = decoder(regions, captions, sampling_probability=1.0)
    torch.manual_seed(1)
    own_other = decoder(regions, other, sampling_probability=1.0)
    torch.testing.assert_close(own.logits, own_other.logits)
    # ...while teacher forcing does depend on them, so the check above can fail.
    assert not torch.allclose(decoder(regions, captions).logits, decoder(regions, other).logits)


def test_half_probability_feeds_a_mix_and_gradients_flow() -> None:
    decoder = make_decoder()
    regions, captions = torch.randn(64, 9, 10), torch.randint(0, 20, (64, 7))
    forced = decoder(regions, captions)
    torch.manual_seed(2)
    mixed = decoder(regions, captions, sampling_probability=0.5)
    same_rows = torch.isclose(mixed.logits[:, 2], forced.logits[:, 2]).all(dim=1).float().mean()
    assert 0.2 < float(same_rows) < 0.9  # some rows read the reference word, some their own
    mixed.logits.logsumexp(-1).sum().backward()
    assert decoder.embedding.weight.grad is not None and decoder.lstm.weight_hh.grad is not None


def test_schedule_starts_grows_and_caps() -> None:
    config = RunConfig()
    assert scheduled_sampling_probability(5, config) == 0.0  # off by default
    config.optim.scheduled_sampling_max = 0.25
    config.optim.scheduled_sampling_start_epoch = 2
    config.optim.scheduled_sampling_increase = 0.1
    probabilities = [scheduled_sampling_probability(e, config) for e in range(1, 6)]
    assert probabilities == pytest.approx([0.0, 0.1, 0.2, 0.25, 0.25])


def test_training_run_with_scheduled_sampling_logs_its_probability(tiny_scenes: Path, tmp_path: Path) -> None:
    from captioner.cli import main

    out = tmp_path / "ss"
    status = main(["train", "--config", "scenes_small_cnn", "--data", str(tiny_scenes), "--out", str(out),
                   "--epochs", "2", *TINY_TRAINING, "--set", "eval.max_images=8",
                   "--set", "optim.scheduled_sampling_max=0.2", "--set", "optim.scheduled_sampling_increase=0.2"])
    assert status == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert "scheduled_sampling" not in history[0]
    assert history[1]["scheduled_sampling"] == pytest.approx(0.2)
    assert json.loads((out / "config.json").read_text())["optim"]["scheduled_sampling_max"] == 0.2
