"""Self-critical sequence training (Rennie et al. 2017): fine-tune a trained captioner on CIDEr-D.

For each image the decoder *samples* ``samples`` captions; each earns its CIDEr-D against the
image's references (``CiderDReward``, idf fixed on the training corpus). The gradient raises the
log-probability of a sample in proportion to how much better it scored than a baseline:

- ``"mean"``: the mean reward of the image's *other* samples (Luo 2020, "A Better Variant of
  Self-Critical Sequence Training"): no extra decoding, and an unbiased baseline;
- ``"greedy"``: the reward of the greedy caption (the original paper's test-time baseline).

Sampling never emits <pad>, <start> or <unk>, so the model is not rewarded for words it may not
write at test time. Without dropout (``scst.dropout`` off, the default) the captions are sampled
without autograd, every step's values recorded (``ShowAttendTellDecoder.sample_recorded``), and
their log-probabilities then come from teacher forcing over them, which reuses those values and
runs only the backward through the recurrence; with dropout, sampling runs with autograd, so
that the log-probabilities come from the dropout masks the words were drawn with.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import torch

from captioner.data.text import END, Vocabulary
from captioner.decoding import SearchTokens, greedy_decode
from captioner.decoding.types import banned_mask
from captioner.metrics.cider_reward import CiderDReward
from captioner.models.decoder import ShowAttendTellDecoder
from captioner.models.recurrence import Recording

BASELINES = ("mean", "greedy")


@dataclass
class SampledCaptions:
    token_ids: torch.Tensor
    """(N, T) sampled words; positions after <end> hold <end>."""
    log_probs: torch.Tensor
    """(N, T) log-probability of each sampled word (with gradient)."""
    mask: torch.Tensor
    """(N, T) 1 for words up to and including <end>, 0 after."""


def sample_captions(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    tokens: SearchTokens,
    max_length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    per_image: int = 1,
) -> SampledCaptions:
    """Sample ``per_image`` captions for each row of ``regions`` (N, R, D) from the decoder's
    distribution: N * per_image rows, an image's samples consecutive. The log-probabilities carry
    gradients where autograd is on."""
    rows = regions.size(0) * per_image
    device = regions.device
    projected, start = decoder.begin(regions)
    state = tuple(part.repeat_interleave(per_image, dim=0) for part in start)
    words = torch.full((rows,), tokens.start_id, dtype=torch.long, device=device)
    banned = banned_mask(decoder.vocab_size, tokens.banned_ids, device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    chosen, chosen_log_probs, masks = [], [], []
    for _ in range(max_length):
        out = decoder.step(words, state, regions, projected)
        log_probs = torch.log_softmax(out.logits.float() / temperature + banned, dim=-1)
        with torch.no_grad():
            words = draw_words(log_probs.exp(), generator)
            words = torch.where(finished, tokens.end_id, words)
        masks.append((~finished).float())
        chosen.append(words)
        chosen_log_probs.append(log_probs.gather(1, words[:, None]).squeeze(1))
        finished = finished | (words == tokens.end_id)
        state = out.state
        if bool(finished.all()):
            break
    return SampledCaptions(
        torch.stack(chosen, dim=1), torch.stack(chosen_log_probs, dim=1), torch.stack(masks, dim=1)
    )


def draw_words(probabilities: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One word per row of (N, V) ``probabilities`` (rows need not sum to 1), by inverting each
    row's cumulative distribution at one uniform draw. ``torch.multinomial`` draws V exponential
    variates per row instead, a large part of sampling on a CPU. A word of
    probability 0 is never drawn."""
    cumulative = probabilities.double().cumsum(dim=1)
    total = cumulative[:, -1:]
    uniform = torch.rand(total.shape, dtype=torch.float64, device=total.device, generator=generator)
    words = torch.searchsorted(cumulative, uniform * total, right=True).squeeze(1)
    # u * total rounds up to total about once in 2^53 draws: take the last word that has mass.
    last_with_mass = (probabilities.size(1) - 1) - (probabilities > 0).flip(1).int().argmax(dim=1)
    return torch.minimum(words, last_with_mass)


def forced_log_probs(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    sampled: SampledCaptions,
    tokens: SearchTokens,
    temperature: float = 1.0,
    recording: Recording | None = None,
) -> torch.Tensor:
    """(N, T) log-probability of each sampled word, with gradient, from one teacher-forced pass
    over the sampled captions: the same numbers sampling computed, at a fraction of the cost of
    sampling with autograd on. With the ``recording`` of ``ShowAttendTellDecoder.sample_recorded``
    the pass reuses what sampling computed and only the backward runs through the recurrence.
    ``regions`` has one row per image, shared by its consecutive samples. Positions after <end>
    hold 0."""
    rows = sampled.token_ids.size(0)
    starts = torch.full((rows, 1), tokens.start_id, dtype=torch.long, device=sampled.token_ids.device)
    captions = torch.cat([starts, sampled.token_ids], dim=1)
    lengths = sampled.mask.sum(dim=1).long()
    out = decoder(regions, captions, lengths=lengths, recording=recording)
    logits = out.word_logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    banned = banned_mask(decoder.vocab_size, tokens.banned_ids, logits.device)
    chosen = sampled.token_ids[out.rows, out.steps]
    word_log_probs = torch.log_softmax(logits + banned, dim=-1).gather(1, chosen.unsqueeze(1)).squeeze(1)
    return word_log_probs.new_zeros(out.shape).index_put((out.rows, out.steps), word_log_probs)


def caption_words(token_ids: torch.Tensor, vocabulary: Vocabulary, end_token: bool = False) -> list[list[str]]:
    """Each row's words up to <end> (the tokens CIDEr-D compares); with ``end_token``, a row
    that emitted <end> keeps it as its last word."""
    # ``decode`` stops at the first <end>.
    return [with_end(vocabulary.decode(ids), end_token and vocabulary.end_id in ids) for ids in token_ids.tolist()]


def with_end(words: Sequence[str], ended: bool) -> list[str]:
    """``words``, with <end> as the last word when ``ended``."""
    return [*words, END] if ended else list(words)


def reward_references(captions: Sequence[Sequence[str]], end_token: bool = False) -> list[list[str]]:
    """Tokenized references as the reward compares them: with ``end_token``, each ends in <end>."""
    return [with_end(words, end_token) for words in captions]


@dataclass
class SelfCriticalStep:
    loss: torch.Tensor
    mean_reward: float
    """Mean CIDEr-D of the samples."""
    baseline_reward: float
    """Mean CIDEr-D of the baseline (other samples' mean, or greedy captions)."""


def self_critical_loss(
    decoder: ShowAttendTellDecoder,
    regions: torch.Tensor,
    image_keys: Sequence[Hashable],
    reward: CiderDReward,
    vocabulary: Vocabulary,
    tokens: SearchTokens,
    samples: int = 5,
    baseline: str = "mean",
    max_length: int = 16,
    temperature: float = 1.0,
    end_token: bool = False,
) -> SelfCriticalStep:
    """Policy-gradient loss of ``samples`` captions per image against the chosen baseline.

    ``end_token``: score finished captions with <end> as their last word; ``reward`` must then
    have been built on references that end in it (``reward_references``)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, not {baseline!r}")
    if baseline == "mean" and samples < 2:
        raise ValueError("the 'mean' baseline needs at least 2 samples per image")
    images = regions.size(0)
    if decoder.training:
        # Dropout on: the log-probabilities must come from the masks the words were sampled with.
        sampled = sample_captions(decoder, regions, tokens, max_length, temperature, per_image=samples)
        log_probs = sampled.log_probs
    else:
        banned = banned_mask(decoder.vocab_size, tokens.banned_ids, regions.device)

        def draw(logits: torch.Tensor) -> torch.Tensor:
            return draw_words(torch.softmax(logits.float() / temperature + banned, dim=-1))

        token_ids, mask, recording = decoder.sample_recorded(
            regions, samples, max_length, tokens.start_id, tokens.end_id, draw
        )
        sampled = SampledCaptions(token_ids, torch.zeros_like(mask), mask)
        log_probs = forced_log_probs(decoder, regions, sampled, tokens, temperature, recording)
    keys = [key for key in image_keys for _ in range(samples)]
    rewards = torch.as_tensor(
        reward.scores(caption_words(sampled.token_ids, vocabulary, end_token), keys), dtype=torch.float32
    ).view(images, samples)
    if baseline == "mean":
        baselines = (rewards.sum(dim=1, keepdim=True) - rewards) / (samples - 1)
    else:
        was_training = decoder.training
        decoder.eval()
        greedy = greedy_decode(decoder, regions.detach(), tokens, max_length)
        decoder.train(was_training)
        greedy_words = [with_end(vocabulary.decode(c.token_ids), end_token and c.finished) for c in greedy]
        greedy_rewards = reward.scores(greedy_words, list(image_keys))
        baselines = torch.as_tensor(greedy_rewards, dtype=torch.float32)[:, None].expand(images, samples)
    advantage = (rewards - baselines).reshape(-1, 1).to(regions.device)
    # Average over the words actually written, so long captions do not dominate the gradient.
    loss = -(advantage * log_probs * sampled.mask).sum() / sampled.mask.sum()
    return SelfCriticalStep(loss, float(rewards.mean()), float(baselines.mean()))
