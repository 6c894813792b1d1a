"""caption_loss on teacher forcing's packed scores against the formula on padded (B, T, ·) ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from captioner.models.attention import doubly_stochastic_penalty
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.training.config import RunConfig
from captioner.training.loop import caption_loss

PAD = 0


def test_packed_loss_equals_masked_cross_entropy_plus_attention_penalty_on_padded_scores() -> None:
    torch.manual_seed(0)
    decoder = ShowAttendTellDecoder(DecoderConfig(8, 12, 10, dropout=0.0), vocab_size=25, feature_dim=6).double()
    captions = torch.tensor([
        [1, 5, 6, 7, 2, PAD, PAD],
        [1, 8, 2, PAD, PAD, PAD, PAD],
        [1, 9, 9, 9, 9, 9, 2],
    ])
    regions = torch.randn(3, 4, 6, dtype=torch.float64)
    config = RunConfig()
    config.optim.attention_regularization = 0.7
    targets = captions[:, 1:]
    mask = targets != PAD
    for lengths in (mask.sum(dim=1), None):  # only the words, or every position (padding masked)
        out = decoder(regions, captions, lengths=lengths)
        total, cross_entropy = caption_loss(out, captions, PAD, config)
        logits, alphas = out.logits, out.alphas
        expected_words = F.cross_entropy(logits[mask], targets[mask], reduction="sum") / mask.sum()
        expected = expected_words + 0.7 * doubly_stochastic_penalty(alphas, mask.double())
        # caption_loss scores in float32, as it does under autocast.
        torch.testing.assert_close(cross_entropy.double(), expected_words.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(total.double(), expected, rtol=1e-6, atol=1e-6)
