"""Self-critical training: sampling, the policy gradient's direction, and a run from a CE model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioner.data.text import END, Vocabulary
from captioner.decoding import SearchTokens
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.metrics.cider_reward import CiderDReward
from captioner.training.self_critical import (
    caption_words,
    reward_references,
    sample_captions,
    self_critical_loss,
)

WORDS = ["red", "blue", "circle", "square", "small"]


class TargetWordReward:
    """Reward 1 for captions that contain ``word``; stands in for CIDEr-D."""

    def __init__(self, word: str) -> None:
        self.word = word

    def scores(self, captions, keys):
        import numpy as np

        return np.array([float(self.word in caption) for caption in captions])


def tiny_decoder(vocabulary: Vocabulary) -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=8, hidden_dim=16, attention_dim=8, dropout=0.0)
    return ShowAttendTellDecoder(config, len(vocabulary), feature_dim=4)


def search_tokens(vocabulary: Vocabulary) -> SearchTokens:
    return SearchTokens(vocabulary.start_id, vocabulary.end_id, (vocabulary.pad_id, vocabulary.start_id, vocabulary.unk_id))


def test_samples_never_hold_banned_words_and_mask_stops_after_end() -> None:
    vocabulary = Vocabulary(WORDS)
    decoder = tiny_decoder(vocabulary)
    sampled = sample_captions(decoder, torch.randn(64, 3, 4), search_tokens(vocabulary), max_length=6)
    ids = sampled.token_ids
    assert not torch.isin(ids, torch.tensor([vocabulary.pad_id, vocabulary.start_id, vocabulary.unk_id])).any()
    for row, mask in zip(ids.tolist(), sampled.mask.tolist()):
        if vocabulary.end_id in row:
            end = row.index(vocabulary.end_id)
            assert mask[: end + 1] == [1.0] * (end + 1) and sum(mask) == end + 1
    assert sampled.log_probs.requires_grad
    assert all(set(words) <= set(WORDS) for words in caption_words(ids, vocabulary))


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_policy_gradient_makes_rewarded_words_likelier(baseline: str) -> None:
    vocabulary = Vocabulary(WORDS)
    decoder = tiny_decoder(vocabulary)
    tokens = search_tokens(vocabulary)
    regions = torch.randn(8, 3, 4)
    reward = TargetWordReward("square")

    def share_with_word() -> float:
        torch.manual_seed(1)
        with torch.no_grad():
            sampled = sample_captions(decoder, regions.repeat(50, 1, 1), tokens, max_length=6)
        return float(reward.scores(caption_words(sampled.token_ids, vocabulary), []).mean())

    before = share_with_word()
    optimizer = torch.optim.Adam(decoder.parameters(), lr=0.02)
    torch.manual_seed(2)
    for _ in range(30):
        step = self_critical_loss(decoder, regions, list(range(8)), reward, vocabulary, tokens,
                                  samples=4, baseline=baseline, max_length=6)
        optimizer.zero_grad()
        step.loss.backward()
        optimizer.step()
    after = share_with_word()
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize("cross_entropy_weight", [0.0, 0.5])
def test_self_critical_run_starts_from_a_trained_model(
    tiny_run: Path, tiny_scenes: Path, tmp_path: Path, cross_entropy_weight: float
) -> None:
    from captioner.cli import main
    from captioner.training.checkpoint import load_run

    out = tmp_path / "scst"
    status = main([
        "train", "--config", str(tiny_run / "config.json"), "--data", str(tiny_scenes), "--out", str(out),
        "--epochs", "1", "--set", "optim.objective=self_critical", "--set", f"init_from={tiny_run}",
        "--set", "optim.learning_rate=1e-4", "--set", "optim.warmup_steps=0", "--set", "scst.samples=3",
        "--set", f"scst.cross_entropy_weight={cross_entropy_weight}", "--set", "threads=1", "--quiet",
    ])
    assert status == 0
    assert load_run(out).config.scst.cross_entropy_weight == cross_entropy_weight
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [0, 1]
    # Epoch 0 scores the starting weights: the same model as tiny_run, so the same validation score.
    assert history[0]["val"]["CIDEr"] == pytest.approx(load_run(tiny_run).metrics["CIDEr"], abs=1e-9)
    assert history[1]["train_reward"] >= 0
    assert load_run(out).vocabulary == load_run(tiny_run).vocabulary


def test_self_critical_without_a_starting_model_is_refused(tiny_scenes: Path, tmp_path: Path) -> None:
    from captioner.cli import main

    status = main(["train", "--config", "scenes_small_cnn", "--data", str(tiny_scenes), "--out", str(tmp_path / "x"),
                   "--set", "optim.objective=self_critical", "--quiet"])
    assert status == 2


class RecordingReward:
    """Scores every caption 0 and keeps what it was asked to score."""

    def __init__(self) -> None:
        self.captions: list[list[str]] = []

    def scores(self, captions, keys):
        import numpy as np

        self.captions.extend(list(c) for c in captions)
        return np.zeros(len(captions))


def test_end_token_is_the_last_word_of_finished_captions_only() -> None:
    vocabulary = Vocabulary(WORDS)
    _, red, blue, _ = vocabulary.encode(["red", "blue"])
    end = vocabulary.end_id
    ids = torch.tensor([[red, end, end], [red, blue, red]])
    assert caption_words(ids, vocabulary) == [["red"], ["red", "blue", "red"]]
    assert caption_words(ids, vocabulary, end_token=True) == [["red", END], ["red", "blue", "red"]]
    assert reward_references([["a", "dog"]], end_token=True) == [["a", "dog", END]]
    assert reward_references([["a", "dog"]]) == [["a", "dog"]]


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_self_critical_loss_scores_end_token_for_samples_and_greedy_baseline(baseline: str) -> None:
    vocabulary = Vocabulary(WORDS)
    decoder = tiny_decoder(vocabulary)
    reward = RecordingReward()
    torch.manual_seed(3)
    self_critical_loss(decoder, torch.randn(16, 3, 4), list(range(16)), reward, vocabulary,
                       search_tokens(vocabulary), samples=4, baseline=baseline, max_length=4, end_token=True)
    scored = 16 * 4 + (16 if baseline == "greedy" else 0)
    assert len(reward.captions) == scored
    ended = [c for c in reward.captions if c and c[-1] == END]
    assert all(END not in c[:-1] for c in reward.captions)
    # Short captions from an untrained decoder: some reach <end> within 4 words, some do not.
    assert 0 < len(ended) < scored
    assert all(len(c) <= 4 for c in reward.captions if c not in ended)


def test_end_token_reward_prefers_how_people_end_a_caption() -> None:
    # With <end> scored, a caption cut off after "a" loses the matched ending n-grams of the
    # whole caption; without it, CIDEr-D has no n-gram that sees where the caption stops.
    references = [["a", "dog", "runs", "on", "the", "grass"], ["a", "dog", "runs", "through", "the", "grass"]]
    corpus = {0: references, 1: [["two", "children", "play", "in", "the", "water"]] * 2}
    whole, cut = ["a", "dog", "runs", "on", "the", "grass"], ["a", "dog", "runs", "on", "the"]
    plain = CiderDReward(corpus)
    with_end = CiderDReward({k: reward_references(v, end_token=True) for k, v in corpus.items()})
    plain_ratio = plain.score(cut, 0) / plain.score(whole, 0)
    end_ratio = with_end.score(cut + [END], 0) / with_end.score(whole + [END], 0)
    assert end_ratio < plain_ratio - 0.05, (plain_ratio, end_ratio)


class ZeroReward:
    """Scores every caption 0: the policy gradient vanishes and only a mixed-in loss can move."""

    def scores(self, captions, keys):
        import numpy as np

        return np.zeros(len(captions))


def mixed_objective_step(weight: float):
    from torch import nn

    from captioner.data.batches import ImageBatch
    from captioner.data.records import CaptionRecord
    from captioner.models.captioning import CaptioningModel
    from captioner.training.config import RunConfig
    from captioner.training.distributed import DistributedContext
    from captioner.training.inputs import InputKind
    from captioner.training.loop import TrainStep

    vocabulary = Vocabulary(WORDS)
    encoder = nn.Identity()
    encoder.feature_dim = 4
    model = CaptioningModel(encoder, tiny_decoder(vocabulary))
    config = RunConfig()
    config.optim.objective = "self_critical"
    config.scst.samples = 3
    config.scst.cross_entropy_weight = weight
    records = [
        CaptionRecord(Path("a.jpg"), ("red circle", "blue square"), "train", "a"),
        CaptionRecord(Path("b.jpg"), ("small red square",), "train", "b"),
        CaptionRecord(Path("c.jpg"), ("!!",), "train", "c"),  # tokenizes to nothing: never forced
    ]
    optimizer = torch.optim.Adam(model.decoder.parameters(), lr=0.05)
    step = TrainStep(model, optimizer, config, vocabulary, InputKind.REGIONS, torch.device("cpu"),
                     DistributedContext(), ZeroReward(), search_tokens(vocabulary), records, None, None)
    torch.manual_seed(3)
    batch = ImageBatch(torch.randn(3, 3, 4), torch.tensor([0, 1, 2]))
    return model, step, batch, vocabulary


def forced_log_likelihood(model, batch, vocabulary: Vocabulary, sentences: list[str]) -> float:
    total = 0.0
    model.decoder.eval()
    for row, sentence in enumerate(sentences):
        caption = torch.tensor([vocabulary.encode(sentence.split())])
        with torch.no_grad():
            out = model.decoder(batch.inputs[row : row + 1], caption)
        total += float(torch.log_softmax(out.logits, dim=-1).gather(2, caption[:, 1:, None]).sum())
    model.decoder.train()
    return total


def test_mixed_objective_teaches_each_image_its_references_in_turn() -> None:
    model, step, batch, vocabulary = mixed_objective_step(weight=1.0)
    # Epoch 1 forces reference (1 + index) % count: image a's second, image b's only one.
    before = forced_log_likelihood(model, batch, vocabulary, ["blue square", "small red square"])
    step.epoch = 1
    for _ in range(20):
        assert step(batch) is not None
    after = forced_log_likelihood(model, batch, vocabulary, ["blue square", "small red square"])
    assert after > before + 5.0, (before, after)
    forced = forced_log_likelihood(model, batch, vocabulary, ["blue square"])
    not_forced = forced_log_likelihood(model, batch, vocabulary, ["red circle"])
    assert forced > not_forced + 2.0, (forced, not_forced)
    # The next epoch it is image a's first reference's turn.
    step.epoch = 2
    for _ in range(40):
        step(batch)
    assert forced_log_likelihood(model, batch, vocabulary, ["red circle"]) > not_forced + 2.0


def test_pure_self_critical_with_no_advantage_leaves_the_weights_alone() -> None:
    model, step, batch, _ = mixed_objective_step(weight=0.0)
    assert step.references is None
    before = [p.detach().clone() for p in model.decoder.parameters()]
    step(batch)
    assert all(torch.equal(a, b) for a, b in zip(before, model.decoder.parameters()))


def test_forced_log_probs_equal_the_log_probs_sampling_computed() -> None:
    from captioner.training.self_critical import forced_log_probs

    vocabulary = Vocabulary(WORDS)
    decoder = tiny_decoder(vocabulary).double().eval()
    tokens = search_tokens(vocabulary)
    regions = torch.randn(6, 3, 4, dtype=torch.float64)
    torch.manual_seed(4)
    sampled = sample_captions(decoder, regions, tokens, max_length=6, temperature=0.7, per_image=3)
    forced = forced_log_probs(decoder, regions, sampled, tokens, temperature=0.7)
    assert sampled.token_ids.shape == (18, sampled.mask.size(1))
    torch.testing.assert_close(forced, sampled.log_probs * sampled.mask)


def test_both_ways_of_computing_the_policy_gradient_agree() -> None:
    """Sampling with autograd on (the path for decoders trained with dropout) and sampling
    without it, then scoring the samples by teacher forcing, give the same loss and gradient."""
    vocabulary = Vocabulary(WORDS)
    tokens = search_tokens(vocabulary)
    regions = torch.randn(5, 3, 4, dtype=torch.float64)
    losses, grads = [], []
    for training in (True, False):
        decoder = tiny_decoder(vocabulary).double().train(training)  # dropout 0: same maths
        torch.manual_seed(5)
        step = self_critical_loss(decoder, regions, list(range(5)), TargetWordReward("red"), vocabulary,
                                  tokens, samples=4, max_length=6)
        losses.append(step.loss)
        grads.append(torch.autograd.grad(step.loss, list(decoder.parameters()), allow_unused=True))
    torch.testing.assert_close(losses[0], losses[1])
    for with_sampling, forced in zip(*grads):
        if with_sampling is None:
            assert forced is None or float(forced.abs().max()) == 0.0
        else:
            torch.testing.assert_close(forced, with_sampling, rtol=1e-5, atol=1e-7)


def test_draw_words_follows_the_probabilities_and_never_draws_impossible_words() -> None:
    from captioner.training.self_critical import draw_words

    probabilities = torch.tensor([[0.0, 0.5, 0.2, 0.0, 0.3], [0.0, 0.0, 0.0, 1.0, 0.0]])
    draws = 40_000
    generator = torch.Generator().manual_seed(0)
    words = draw_words(probabilities.repeat(draws, 1), generator).view(draws, 2)
    assert (words[:, 1] == 3).all()
    shares = torch.bincount(words[:, 0], minlength=5).double() / draws
    assert shares[0] == 0 and shares[3] == 0
    # Three standard deviations of a share of 40,000 draws is at most 0.0075.
    torch.testing.assert_close(shares, probabilities[0].double(), rtol=0, atol=0.0075)
    # Unnormalised rows are fine; the last word with mass is reachable.
    assert draw_words(torch.tensor([[0.0, 0.0, 2.0]])).item() == 2
