"""Teacher forcing through ``recurrence.attention_lstm`` against autograd through ``step``.

The reference is the decoder's own word-by-word maths (``_attend_and_update`` and
``_word_logits``) with autograd's gradients, in float64; the packed recurrence with its
hand-written backward must give the same scores, attention weights and gradients for every
parameter and for the regions, whatever the caption lengths, their order, and whether captions
share an image's regions.
"""

from __future__ import annotations

import pytest
import torch

from captioner.models import recurrence
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.models.recurrence import PackedSteps


def make_decoder(deep_output: bool = True, dropout: float = 0.0, region_dim: int = 0) -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(
        embed_dim=8, hidden_dim=12, attention_dim=10, dropout=dropout, deep_output=deep_output, region_dim=region_dim
    )
    return ShowAttendTellDecoder(config, vocab_size=30, feature_dim=6).double()


def stepwise(decoder: ShowAttendTellDecoder, regions: torch.Tensor, captions: torch.Tensor):
    """(B, T, V) logits and (B, T, R) attention from autograd through every word, every row
    computed to the full length; ``regions`` has a row per caption. With ``region_dim`` set,
    the embedded regions come with the projected ones, as the searches get them."""
    projected, state = decoder.project_regions(regions), decoder.init_state(regions)
    keys, attended = decoder._keys_and_regions(regions, projected)
    logits, alphas = [], []
    for t in range(captions.size(1) - 1):
        embedded = decoder.embedding(captions[:, t])
        state, context, alpha = decoder._attend_and_update(embedded, state, attended, keys)
        logits.append(decoder._word_logits(embedded, state[0], context))
        alphas.append(alpha)
    return torch.stack(logits, dim=1), torch.stack(alphas, dim=1)


def gradients(decoder, regions, loss):
    return torch.autograd.grad(loss, [regions, *decoder.parameters()], allow_unused=True)


def assert_same_gradients(decoder, regions, loss, reference_loss):
    names = ["regions"] + [name for name, _ in decoder.named_parameters()]
    for name, got, expected in zip(names, gradients(decoder, regions, loss), gradients(decoder, regions, reference_loss)):
        if expected is None:
            assert got is None or float(got.abs().max()) == 0.0, name
            continue
        # The reference takes its softmax in float32 (attention.weights_from_query).
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize(("deep_output", "region_dim"), [(True, 0), (False, 0), (True, 5), (False, 5)])
def test_scores_attention_and_gradients_equal_autograd_word_by_word(deep_output: bool, region_dim: int) -> None:
    decoder = make_decoder(deep_output, region_dim=region_dim)
    regions = torch.randn(5, 4, 6, dtype=torch.float64, requires_grad=True)
    captions = torch.randint(3, 30, (5, 8))
    lengths = torch.tensor([3, 7, 1, 5, 7])  # unsorted, with ties and a one-word caption
    out = decoder(regions, captions, lengths=lengths)
    ref_logits, ref_alphas = stepwise(decoder, regions, captions)

    mask = torch.arange(7)[None] < lengths[:, None]
    torch.testing.assert_close(out.logits[mask], ref_logits[mask], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.alphas[mask], ref_alphas[mask], rtol=1e-6, atol=1e-7)
    assert float(out.logits.detach()[~mask].abs().max()) == 0.0 and float(out.alphas.detach()[~mask].abs().max()) == 0.0
    assert out.word_logits.size(0) == int(lengths.sum())

    logit_weights, alpha_weights = torch.randn_like(ref_logits), torch.randn_like(ref_alphas)

    def loss(logits, alphas):
        return (logits * logit_weights)[mask].sum() + (alphas * alpha_weights)[mask].sum()

    assert_same_gradients(decoder, regions, loss(out.logits, out.alphas), loss(ref_logits, ref_alphas))


@pytest.mark.parametrize("region_dim", [0, 5])
def test_captions_sharing_an_image_equal_captions_with_their_own_copy(region_dim: int) -> None:
    decoder = make_decoder(region_dim=region_dim)
    images = torch.randn(3, 4, 6, dtype=torch.float64, requires_grad=True)
    captions = torch.randint(3, 30, (6, 6))
    lengths = torch.tensor([2, 5, 5, 1, 3, 4])
    shared = decoder(images, captions, lengths=lengths)  # two consecutive captions per image
    copies = decoder(images.repeat_interleave(2, dim=0), captions, lengths=lengths)
    torch.testing.assert_close(shared.logits, copies.logits)
    torch.testing.assert_close(shared.alphas, copies.alphas)
    weights = torch.randn_like(shared.word_logits)
    assert_same_gradients(
        decoder, images, (shared.word_logits * weights).sum(), (copies.word_logits * weights).sum()
    )


def test_energies_computed_a_group_of_rows_at_a_time_change_nothing(monkeypatch) -> None:
    decoder = make_decoder()
    regions = torch.randn(7, 4, 6, dtype=torch.float64, requires_grad=True)
    captions = torch.randint(3, 30, (7, 6))
    lengths = torch.tensor([5, 5, 4, 3, 3, 2, 1])
    whole = decoder(regions, captions, lengths=lengths)
    monkeypatch.setattr(recurrence, "ENERGY_GROUP_VALUES", 2 * 4 * 10)  # two rows per group
    assert recurrence.energy_group_rows(4, 10) == 2
    grouped = decoder(regions, captions, lengths=lengths)
    torch.testing.assert_close(grouped.word_logits, whole.word_logits)
    weights = torch.randn_like(whole.word_logits)
    assert_same_gradients(decoder, regions, (grouped.word_logits * weights).sum(), (whole.word_logits * weights).sum())


def test_without_lengths_every_position_is_computed() -> None:
    decoder = make_decoder()
    regions = torch.randn(3, 4, 6, dtype=torch.float64)
    captions = torch.randint(3, 30, (3, 5))
    out = decoder(regions, captions)
    ref_logits, ref_alphas = stepwise(decoder, regions, captions)
    torch.testing.assert_close(out.logits, ref_logits, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.alphas, ref_alphas, rtol=1e-6, atol=1e-7)


def test_bfloat16_autocast_stays_close_to_float32_and_gives_float32_gradients() -> None:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=16, hidden_dim=24, attention_dim=20, dropout=0.0)
    decoder = ShowAttendTellDecoder(config, vocab_size=40, feature_dim=12)
    regions = torch.randn(6, 9, 12)
    captions = torch.randint(3, 40, (6, 7))
    lengths = torch.tensor([6, 4, 6, 2, 5, 3])
    exact = decoder(regions, captions, lengths=lengths)
    exact.word_logits.logsumexp(dim=1).sum().backward()
    exact_grads = [p.grad.clone() for p in decoder.parameters()]
    decoder.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = decoder(regions, captions, lengths=lengths)
        low.word_logits.float().logsumexp(dim=1).sum().backward()
    torch.testing.assert_close(low.word_logits.float(), exact.word_logits, rtol=0.05, atol=0.05)
    for parameter, expected in zip(decoder.parameters(), exact_grads):
        assert parameter.grad.dtype == torch.float32
        scale = float(expected.abs().max()) + 1e-6
        assert float((parameter.grad - expected).abs().max()) <= 0.05 * scale


def test_packed_steps_count_the_captions_still_being_written() -> None:
    steps = PackedSteps.from_sorted_lengths([4, 2, 2, 1, 0])
    assert steps.active == (4, 3, 1, 1)
    assert steps.offsets == (0, 4, 7, 8)
    assert steps.total == 9
    rows, positions = steps.rows_and_steps(torch.device("cpu"))
    assert rows.tolist() == [0, 1, 2, 3, 0, 1, 2, 0, 0]
    assert positions.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 3]
    assert PackedSteps.from_sorted_lengths([]).total == 0


@pytest.mark.parametrize("region_dim", [0, 5])
def test_a_recorded_sampling_run_replays_as_teacher_forcing_with_the_same_gradients(region_dim: int) -> None:
    from captioner.decoding import SearchTokens, greedy_decode
    from captioner.decoding.types import banned_mask

    decoder = make_decoder(region_dim=region_dim).eval()
    images = torch.randn(4, 4, 6, dtype=torch.float64, requires_grad=True)
    tokens = SearchTokens(start_id=1, end_id=2, banned_ids=(0, 1, 3))
    banned = banned_mask(30, tokens.banned_ids, images.device)
    words, mask, recording = decoder.sample_recorded(
        images, 2, 7, tokens.start_id, tokens.end_id, lambda logits: (logits.float() + banned).argmax(dim=1)
    )
    # Drawing the likeliest word is greedy decoding (another module's search).
    greedy = greedy_decode(decoder, images.detach(), tokens, 7)
    for row in range(8):
        length = int(mask[row].sum())
        expected = greedy[row // 2].token_ids
        assert words[row, :length].tolist()[: len(expected)] == list(expected)

    captions = torch.cat([torch.full((8, 1), tokens.start_id), words], dim=1)
    lengths = mask.sum(dim=1).long()
    replayed = decoder(images, captions, lengths=lengths, recording=recording)
    computed = decoder(images, captions, lengths=lengths)
    torch.testing.assert_close(replayed.word_logits, computed.word_logits, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(replayed.word_alphas, computed.word_alphas, rtol=1e-9, atol=1e-10)
    weights = torch.randn_like(computed.word_logits)
    assert_same_gradients(
        decoder, images, (replayed.word_logits * weights).sum(), (computed.word_logits * weights).sum()
    )


def test_captions_of_no_words_compute_nothing() -> None:
    decoder = make_decoder()
    regions = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    out = decoder(regions, torch.randint(3, 30, (2, 4)), lengths=torch.zeros(2, dtype=torch.long))
    assert out.word_logits.shape == (0, 30) and out.logits.shape == (2, 3, 30)
    out.word_logits.sum().backward()
