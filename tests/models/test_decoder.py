import pytest
import torch

from captioner.models import packed_linear
from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder


@pytest.fixture
def pack_every_weight(monkeypatch):
    """The test decoders are tiny; let the oneDNN-packed products run on their weights too."""
    monkeypatch.setattr(packed_linear, "_MIN_WEIGHT_VALUES", 0)


def make_decoder(deep_output: bool = True, region_dim: int = 0) -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(
        embed_dim=8, hidden_dim=12, attention_dim=6, dropout=0.3, deep_output=deep_output, region_dim=region_dim
    )
    return ShowAttendTellDecoder(config, vocab_size=20, feature_dim=10)


def test_teacher_forcing_shapes_and_attention_rows():
    decoder = make_decoder()
    out = decoder(torch.randn(4, 9, 10), torch.randint(0, 20, (4, 6)))
    assert out.logits.shape == (4, 5, 20)
    assert out.alphas.shape == (4, 5, 9)
    torch.testing.assert_close(out.alphas.sum(dim=2), torch.ones(4, 5))


@pytest.mark.parametrize("region_dim", [0, 7])
def test_step_by_step_equals_teacher_forcing_in_eval_mode(region_dim):
    for deep_output in (True, False):
        decoder = make_decoder(deep_output, region_dim).eval()
        regions = torch.randn(3, 9, 10)
        captions = torch.randint(0, 20, (3, 7))
        forced = decoder(regions, captions)
        state = decoder.init_state(regions)
        projected = decoder.project_regions(regions)
        for t in range(6):
            out = decoder.step(captions[:, t], state, regions, projected)
            torch.testing.assert_close(out.logits, forced.logits[:, t])
            torch.testing.assert_close(out.alpha, forced.alphas[:, t])
            state = out.state


@pytest.mark.parametrize("region_dim", [0, 7])
def test_gradients_reach_every_parameter(region_dim):
    decoder = make_decoder(region_dim=region_dim)
    out = decoder(torch.randn(2, 9, 10), torch.randint(0, 20, (2, 5)))
    out.logits.logsumexp(-1).sum().backward()
    missing = [name for name, p in decoder.named_parameters() if p.grad is None]
    assert missing == []


def _run_steps(decoder, regions, captions, with_context_terms):
    state = decoder.init_state(regions)
    projected = decoder.project_regions(regions, with_context_terms=with_context_terms)
    outputs = []
    for t in range(captions.size(1)):
        out = decoder.step(captions[:, t], state, regions, projected)
        outputs.append(out)
        state = out.state
    return outputs


@pytest.mark.parametrize("region_dim", [0, 7])
def test_decoding_steps_equal_the_training_path(pack_every_weight, region_dim):
    """The searches' step (stacked and packed products, the word-gate table, with or without
    the precomputed context terms, with or without autograd) gives the same words, attention
    and state as the teacher-forcing path's nn.LSTMCell step, up to float rounding."""
    for deep_output in (True, False):
        decoder = make_decoder(deep_output, region_dim).eval()
        regions = torch.randn(3, 9, 10)
        captions = torch.randint(0, 20, (3, 6))
        reference = _run_steps(decoder, regions, captions, with_context_terms=False)
        variants = []
        for grad in (False, True):
            with torch.set_grad_enabled(grad):
                variants.append(_run_steps(decoder, regions, captions, with_context_terms=True))
        with torch.inference_mode():
            variants.append(_run_steps(decoder, regions, captions, with_context_terms=False))
        for steps in variants:
            for a, b in zip(reference, steps):
                torch.testing.assert_close(b.logits, a.logits)
                torch.testing.assert_close(b.alpha, a.alpha)
                torch.testing.assert_close(b.state[0], a.state[0])
                torch.testing.assert_close(b.state[1], a.state[1])


@pytest.mark.parametrize("region_dim", [0, 7])
def test_inference_caches_follow_weight_updates(pack_every_weight, region_dim):
    """Every weight the inference path caches a derived form of (word-gate table, stacked
    region/hidden/initial-state maps, oneDNN-packed copies) is re-derived after an in-place
    update, as an optimiser step or ``load_state_dict`` makes."""
    decoder = make_decoder(region_dim=region_dim).eval()
    regions = torch.randn(2, 9, 10)
    captions = torch.randint(0, 20, (2, 4))
    with torch.inference_mode():
        _run_steps(decoder, regions, captions, with_context_terms=True)  # fills the caches
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    with torch.inference_mode():
        fast = _run_steps(decoder, regions, captions, with_context_terms=True)
    plain = _run_steps(decoder, regions, captions, with_context_terms=False)  # autograd: no caches
    for a, b in zip(plain, fast):
        torch.testing.assert_close(b.logits, a.logits)
        torch.testing.assert_close(b.state[0], a.state[0])


@pytest.mark.parametrize("region_dim", [0, 7])
def test_states_may_share_their_images_regions(pack_every_weight, region_dim):
    """A search passes one row of regions per image for its K hypotheses of that image; the
    steps equal those over regions repeated for every hypothesis, on both decoding paths."""
    decoder = make_decoder(region_dim=region_dim).eval()
    regions = torch.randn(2, 9, 10)
    hypotheses = 3
    words = torch.randint(0, 20, (2 * hypotheses, 5))
    repeated = regions.repeat_interleave(hypotheses, dim=0)
    for with_context_terms in (False, True):
        with torch.inference_mode():
            state = tuple(s.repeat_interleave(hypotheses, dim=0) for s in decoder.init_state(regions))
            shared = decoder.project_regions(regions, with_context_terms=with_context_terms)
            copied = decoder.project_regions(repeated, with_context_terms=with_context_terms)
            state_copied = state
            for t in range(words.size(1)):
                a = decoder.step(words[:, t], state, regions, shared)
                b = decoder.step(words[:, t], state_copied, repeated, copied)
                torch.testing.assert_close(a.logits, b.logits)
                torch.testing.assert_close(a.alpha, b.alpha)
                state, state_copied = a.state, b.state
    with torch.inference_mode(), pytest.raises(ValueError, match="cannot share the regions of 4 images"):
        decoder.step(words[:5, 0], (state[0][:5], state[1][:5]), torch.randn(4, 9, 10),
                     decoder.project_regions(torch.randn(4, 9, 10)))


def test_a_decoder_made_under_inference_mode_decodes():
    """Parameters created under inference mode keep no version counter; the inference caches
    must not need one (a user may load a model inside ``torch.inference_mode()``)."""
    with torch.inference_mode():
        decoder = make_decoder().eval()
        regions = torch.randn(2, 9, 10)
        captions = torch.randint(0, 20, (2, 4))
        fast = _run_steps(decoder, regions, captions, with_context_terms=True)
        plain = _run_steps(decoder, regions, captions, with_context_terms=False)
    for a, b in zip(plain, fast):
        torch.testing.assert_close(b.logits, a.logits)


def test_region_dim_embeds_each_region_once_and_refuses_an_ambiguous_size():
    decoder = make_decoder(region_dim=7)
    regions = torch.randn(2, 9, 10)
    with torch.no_grad():
        embedded = decoder.embed_regions(regions)
    assert embedded.shape == (2, 9, 7) and float(embedded.min()) >= 0.0  # after the ReLU
    torch.testing.assert_close(embedded, torch.relu(regions @ decoder.region_embedding.weight.t() + decoder.region_embedding.bias))
    assert decoder.project_regions(regions).shape == (2, 9, 6 + 7)  # keys, then the embedded regions
    assert decoder.project_regions(regions, with_context_terms=True).shape == (2, 9, 6 + 4 * 12 + 8)
    with torch.inference_mode():  # ``begin`` embeds once what the two calls embed each
        for terms in (False, True):
            projected, (hidden, cell) = decoder.begin(regions, with_context_terms=terms)
            torch.testing.assert_close(projected, decoder.project_regions(regions, with_context_terms=terms))
            torch.testing.assert_close(hidden, decoder.init_state(regions)[0])
            torch.testing.assert_close(cell, decoder.init_state(regions)[1])
    assert "region_embedding.weight" not in make_decoder().state_dict()  # older checkpoints load as before
    with pytest.raises(ValueError, match="context terms' width"):
        ShowAttendTellDecoder(DecoderConfig(8, 12, 6, 0.0, True, region_dim=4 * 12 + 8), vocab_size=20, feature_dim=10)
