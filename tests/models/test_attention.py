import torch

from captioner.models.attention import SoftAttention, doubly_stochastic_penalty


def test_attention_weights_are_a_distribution_and_context_is_their_mix():
    torch.manual_seed(0)
    attention = SoftAttention(feature_dim=6, hidden_dim=5, attention_dim=4)
    regions = torch.randn(3, 7, 6)
    context, weights = attention(regions, attention.project_regions(regions), torch.randn(3, 5))
    assert weights.shape == (3, 7)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(context, torch.einsum("br,brd->bd", weights, regions))


def test_doubly_stochastic_penalty_known_values():
    alphas = torch.tensor([[[0.5, 0.5], [0.5, 0.5]]])
    # Every region receives 1.0 in total over two steps: no penalty.
    assert doubly_stochastic_penalty(alphas, torch.ones(1, 2)).item() == 0.0
    # Only the first step is a real word: each region gets 0.5 -> 2 * (1 - 0.5)^2 = 0.5.
    assert doubly_stochastic_penalty(alphas, torch.tensor([[1.0, 0.0]])).item() == 0.5
    # All attention on one region for three steps: (1-3)^2 + (1-0)^2 = 5.
    focused = torch.tensor([[[1.0, 0.0]] * 3])
    assert doubly_stochastic_penalty(focused, torch.ones(1, 3)).item() == 5.0


def test_cpu_inference_weights_equal_the_training_maths(monkeypatch):
    """Inference on a CPU computes the energies as 2 w^T sigmoid(2(k + q)) + (b - sum w), a few
    images at a time; the weights equal tanh's, for any grouping of the images."""
    from captioner.models import attention as attention_module

    torch.manual_seed(0)
    attention = SoftAttention(feature_dim=6, hidden_dim=5, attention_dim=4)
    regions = torch.randn(5, 7, 6)
    hidden = torch.randn(15, 5)  # 3 states per image, sharing its regions
    projected = attention.project_regions(regions)
    expected = attention.weights(projected, hidden)  # autograd on: the training path
    for group_values in (1, 2 * 3 * 7 * 4, 1 << 19):
        monkeypatch.setattr(attention_module, "ENERGY_GROUP_VALUES", group_values)
        with torch.inference_mode():
            torch.testing.assert_close(attention.weights(projected, hidden), expected)
