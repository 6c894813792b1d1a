"""Ensembles: the mixture's arithmetic, searches over it, and its encoders' shared input."""

from __future__ import annotations

import pytest
import torch

from captioner.decoding import DecodeSettings, SearchTokens, decode
from captioner.encoders.base import EncoderConfig
from captioner.encoders.registry import build_encoder
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder
from captioner.models.ensemble import DecoderEnsemble, EncoderEnsemble

VOCAB = 12
FEATURES = 6
TOKENS = SearchTokens(start_id=1, end_id=2, banned_ids=(0, 1, 3))


def make_decoder(seed: int, hidden: int = 10, vocab: int = VOCAB, region_dim: int = 0) -> ShowAttendTellDecoder:
    torch.manual_seed(seed)
    config = DecoderConfig(embed_dim=8, hidden_dim=hidden, attention_dim=7, region_dim=region_dim)
    decoder = ShowAttendTellDecoder(config, vocab, FEATURES)
    with torch.no_grad():  # larger weights than the initialisation, so that the members disagree
        for parameter in decoder.parameters():
            parameter.normal_(0, 0.5)
    return decoder.eval()


@pytest.mark.parametrize("region_dims", [(0, 0), (4, 0), (5, 3)])
def test_a_step_mixes_the_members_probabilities_states_and_attention(region_dims: tuple[int, int]) -> None:
    first, second = make_decoder(0, region_dim=region_dims[0]), make_decoder(1, hidden=14, region_dim=region_dims[1])
    regions = torch.randn(2, 5, 2 * FEATURES)
    ensemble = DecoderEnsemble([first, second], [slice(0, FEATURES), slice(FEATURES, 2 * FEATURES)], [3.0, 1.0])
    assert ensemble.weights == [0.75, 0.25]
    words = torch.tensor([4, 5])
    with torch.inference_mode():
        out = ensemble.step(words, ensemble.init_state(regions), regions, ensemble.project_regions(regions))
        parts = []
        for decoder, part in ((first, regions[..., :FEATURES]), (second, regions[..., FEATURES:])):
            parts.append(decoder.step(words, decoder.init_state(part), part, decoder.project_regions(part)))
    expected = torch.log(0.75 * parts[0].logits.softmax(-1) + 0.25 * parts[1].logits.softmax(-1))
    torch.testing.assert_close(out.logits, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(2))
    torch.testing.assert_close(out.alpha, 0.75 * parts[0].alpha + 0.25 * parts[1].alpha)
    torch.testing.assert_close(out.state[0], torch.cat([parts[0].state[0], parts[1].state[0]], dim=1))
    torch.testing.assert_close(out.state[1], torch.cat([parts[0].state[1], parts[1].state[1]], dim=1))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_searching_one_member_ensemble_gives_that_decoders_captions(beam_size: int) -> None:
    decoder = make_decoder(2)
    regions = torch.randn(4, 5, FEATURES)
    settings = DecodeSettings(beam_size=beam_size, max_length=8, length_penalty=1.0, no_repeat_ngram_size=3)
    alone = decode(decoder, regions, TOKENS, settings)
    ensembled = decode(DecoderEnsemble([decoder], [slice(0, FEATURES)], [1.0]), regions, TOKENS, settings)
    assert [c.token_ids for c in ensembled] == [c.token_ids for c in alone]
    for mixed, single in zip(ensembled, alone):
        assert mixed.log_prob == pytest.approx(single.log_prob, abs=1e-4)
        torch.testing.assert_close(mixed.alphas, single.alphas)


def test_a_search_over_two_members_follows_their_mixture() -> None:
    first, second = make_decoder(3), make_decoder(4)
    regions = torch.randn(3, 5, FEATURES)
    ensemble = DecoderEnsemble([first, second], [slice(0, FEATURES)] * 2, [1.0, 1.0])
    captions = decode(ensemble, regions, TOKENS, DecodeSettings(beam_size=1, max_length=6))
    # Greedy decoding by hand on the mixture must pick the same words.
    for image, caption in enumerate(captions):
        region = regions[image : image + 1]
        states = [d.init_state(region) for d in (first, second)]
        projected = [d.project_regions(region) for d in (first, second)]
        word, words = torch.tensor([TOKENS.start_id]), []
        with torch.inference_mode():
            for _ in range(6):
                outs = [d.step(word, s, region, p) for d, s, p in zip((first, second), states, projected)]
                probs = sum(0.5 * o.logits.softmax(-1) for o in outs)
                probs[:, list(TOKENS.banned_ids)] = 0
                word = probs.argmax(-1)
                states = [o.state for o in outs]
                if int(word) == TOKENS.end_id:
                    break
                words.append(int(word))
        assert caption.token_ids == words


def test_members_must_share_a_vocabulary_and_have_positive_weights() -> None:
    with pytest.raises(ValueError, match="one vocabulary"):
        DecoderEnsemble([make_decoder(0), make_decoder(1, vocab=VOCAB + 1)], [slice(0, FEATURES)] * 2, [1, 1])
    with pytest.raises(ValueError, match="positive"):
        DecoderEnsemble([make_decoder(0), make_decoder(1)], [slice(0, FEATURES)] * 2, [1, 0])
    with pytest.raises(ValueError, match="one feature slice and one weight"):
        DecoderEnsemble([make_decoder(0)], [slice(0, FEATURES)], [1, 1])


def test_the_products_precision_reaches_every_member() -> None:
    ensemble = DecoderEnsemble([make_decoder(0), make_decoder(1)], [slice(0, FEATURES)] * 2, [1, 1])
    ensemble.product_precision = "int8"
    assert [member.product_precision for member in ensemble.members] == ["int8", "int8"]
    ensemble.product_precision = "fp32"
    assert ensemble.product_precision == "fp32"


def test_encoders_run_side_by_side_on_one_input() -> None:
    small = EncoderConfig(name="small_cnn", pretrained=False, image_size=64)
    torch.manual_seed(0)
    first, second = build_encoder(small), build_encoder(small)
    ensemble = EncoderEnsemble([first.eval(), second.eval()], image_size=64)
    images = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        regions = ensemble(images)
        torch.testing.assert_close(regions[..., ensemble.feature_slice(0)], first(images))
        torch.testing.assert_close(regions[..., ensemble.feature_slice(1)], second(images))
    assert ensemble.feature_dim == first.feature_dim + second.feature_dim
    assert ensemble.grid_size() == first.grid_size(64)
    assert ensemble.classifier_tail is None  # the scenes CNN has no ImageNet head


def test_encoders_that_need_other_inputs_cannot_be_ensembled() -> None:
    first = build_encoder(EncoderConfig(name="small_cnn", pretrained=False, image_size=64))
    second = build_encoder(EncoderConfig(name="small_cnn", pretrained=False, image_size=96))
    with pytest.raises(ValueError, match="preprocess photos differently"):
        EncoderEnsemble([first, second], image_size=64)


def test_the_classifier_is_the_first_members_reading_its_channels() -> None:
    config = EncoderConfig(name="efficientnet_lite0", pretrained=False)
    torch.manual_seed(0)
    first = build_encoder(config).eval()
    second = build_encoder(config).eval()
    ensemble = EncoderEnsemble([first, second], image_size=224)
    assert ensemble.grid_size() == (7, 7)
    grid = torch.randn(2, ensemble.feature_dim, 7, 7)
    with torch.inference_mode():
        labels = ensemble.classifier_tail(grid)
        torch.testing.assert_close(labels, first.classifier_tail(grid[:, : first.feature_dim]))
        assert not torch.allclose(labels, second.classifier_tail(grid[:, first.feature_dim :]))


def _members_one_by_one(ensemble: DecoderEnsemble) -> DecoderEnsemble:
    """The same ensemble with lockstep decoding turned off: each member steps on its own."""
    unstacked = DecoderEnsemble(list(ensemble.members), ensemble.feature_slices, ensemble.weights)
    unstacked.lockstep = False
    return unstacked


@pytest.mark.parametrize("deep_output", [True, False])
@pytest.mark.parametrize("one_image_per_group", [False, True])
def test_members_of_one_shape_step_in_lockstep_as_they_step_one_by_one(
    deep_output: bool, one_image_per_group: bool, monkeypatch
) -> None:
    if one_image_per_group:  # the attention's energies then run image by image
        monkeypatch.setattr("captioner.models.ensemble.ENERGY_GROUP_VALUES", 1)
    members = []
    for seed in (5, 6):
        torch.manual_seed(seed)
        config = DecoderConfig(embed_dim=8, hidden_dim=10, attention_dim=7, deep_output=deep_output)
        decoder = ShowAttendTellDecoder(config, VOCAB, FEATURES)
        with torch.no_grad():
            for parameter in decoder.parameters():
                parameter.normal_(0, 0.5)
        members.append(decoder.eval())
    ensemble = DecoderEnsemble(members, [slice(0, FEATURES), slice(FEATURES, 2 * FEATURES)], [3.0, 1.0])
    one_by_one = _members_one_by_one(ensemble)
    regions = torch.randn(2, 5, 2 * FEATURES)
    words = torch.tensor([4, 5, 6, 7, 8, 9])  # 3 hypotheses per image
    with torch.inference_mode():
        stacked_regions = ensemble.project_regions(regions, with_context_terms=True)
        side_by_side = one_by_one.project_regions(regions, with_context_terms=True)
        assert stacked_regions.shape[1] == 2 * 5 and side_by_side.shape[1] == 5
        state = tuple(part.repeat_interleave(3, dim=0) for part in ensemble.init_state(regions))
        for _ in range(3):  # a few steps, feeding each its own state
            fast = ensemble.step(words, state, regions, stacked_regions)
            slow = one_by_one.step(words, state, regions, side_by_side)
            torch.testing.assert_close(fast.logits, slow.logits, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(fast.alpha, slow.alpha, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(fast.state[0], slow.state[0], atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(fast.state[1], slow.state[1], atol=1e-6, rtol=1e-5)
            state, words = fast.state, fast.logits.argmax(dim=1)


@pytest.mark.parametrize("beam_size", [1, 3])
@pytest.mark.parametrize("region_dim", [0, 4])
def test_lockstep_searches_give_the_captions_of_one_by_one_searches(beam_size: int, region_dim: int) -> None:
    members = [make_decoder(7, region_dim=region_dim), make_decoder(8, region_dim=region_dim)]
    ensemble = DecoderEnsemble(members, [slice(0, FEATURES)] * 2, [1.0, 1.0])
    regions = torch.randn(4, 5, FEATURES)
    settings = DecodeSettings(beam_size=beam_size, max_length=8, no_repeat_ngram_size=3)
    fast = decode(ensemble, regions, TOKENS, settings)
    slow = decode(_members_one_by_one(ensemble), regions, TOKENS, settings)
    assert [c.token_ids for c in fast] == [c.token_ids for c in slow]
    for a, b in zip(fast, slow):
        assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        torch.testing.assert_close(a.alphas, b.alphas, atol=1e-5, rtol=1e-5)
