import torch

from captioner.models.decoder import DecoderConfig, ShowAttendTellDecoder


def make_decoder(deep_output: bool = True) -> ShowAttendTellDecoder:
    torch.manual_seed(0)
    config = DecoderConfig(embed_dim=8, hidden_dim=12, attention_dim=6, dropout=0.3, deep_output=deep_output)
    return ShowAttendTellDecoder(config, vocab_size=20, feature_dim=10)


def test_teacher_forcing_shapes_and_attention_rows():
    decoder = make_decoder()
    out = decoder(torch.randn(4, 9, 10), torch.randint(0, 20, (4, 6)))
    assert out.logits.shape == (4, 5, 20)
    assert out.alphas.shape == (4, 5, 9)
    torch.testing.assert_close(out.alphas.sum(dim=2), torch.ones(4, 5))


def test_step_by_step_equals_teacher_forcing_in_eval_mode():
    for deep_output in (True, False):
        decoder = make_decoder(deep_output).eval()
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


def test_gradients_reach_every_parameter():
    decoder = make_decoder()
    out = decoder(torch.randn(2, 9, 10), torch.randint(0, 20, (2, 5)))
    out.logits.logsumexp(-1).sum().backward()
    missing = [name for name, p in decoder.named_parameters() if p.grad is None]
    assert missing == []
