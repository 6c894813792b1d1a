"""Additive (Bahdanau) soft attention over image regions, as in Show, Attend and Tell.

Kept as small pure pieces so tests can pin the maths: the region projection is computed once
per image and reused at every word, because it does not depend on the decoder state.
"""

from __future__ import annotations

import torch
from torch import nn


class SoftAttention(nn.Module):
    """e_ti = w^T tanh(W_a a_i + W_h h_t); alpha_t = softmax_i(e_ti); z_t = sum_i alpha_ti a_i."""

    def __init__(self, feature_dim: int, hidden_dim: int, attention_dim: int) -> None:
        super().__init__()
        self.region_projection = nn.Linear(feature_dim, attention_dim)
        self.hidden_projection = nn.Linear(hidden_dim, attention_dim)
        self.score = nn.Linear(attention_dim, 1)

    def project_regions(self, regions: torch.Tensor) -> torch.Tensor:
        """(N, R, D) region features -> (N, R, A); call once per image, reuse for every word."""
        return self.region_projection(regions)

    def forward(
        self, regions: torch.Tensor, projected_regions: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the context vector (N, D) and the attention weights (N, R) for one step."""
        weights = self.weights(projected_regions, hidden).to(regions.dtype)
        context = torch.bmm(weights.unsqueeze(1), regions).squeeze(1)
        return context, weights

    def weights(self, projected_regions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """alpha_t (N, R) in float32: softmax over regions, so low-precision runs stay normalised."""
        energies = self.score(
            torch.tanh(projected_regions + self.hidden_projection(hidden).unsqueeze(1))
        ).squeeze(2)
        return torch.softmax(energies.float(), dim=1)


def doubly_stochastic_penalty(alphas: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Show, Attend and Tell's regulariser: sum_i (1 - sum_t alpha_ti)^2, averaged over images.

    It pushes the decoder to look at every region at some point of the caption. ``alphas`` is
    (B, T, R); ``step_mask`` (B, T) is 1 for real words so that padding adds no attention.
    """
    attention_per_region = (alphas * step_mask.unsqueeze(2)).sum(dim=1)
    return ((1.0 - attention_per_region) ** 2).sum(dim=1).mean()
