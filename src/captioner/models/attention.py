"""Additive (Bahdanau) soft attention over image regions, as in Show, Attend and Tell.

Kept as small pure pieces so tests can pin the maths: the region projection is computed once
per image and reused at every word, because it does not depend on the decoder state.
"""

from __future__ import annotations

import torch
from torch import nn

from captioner.models import packed_linear


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
        """Return the context vector (N, D) and the attention weights (N, R) for one step.

        ``regions`` and ``projected_regions`` have one row per state (N) or one per image (B),
        shared by that image's N // B consecutive states (a search's hypotheses), which then
        need no copies of their image's regions.
        """
        weights = self.weights(projected_regions, hidden).to(regions.dtype)
        return weighted_sum(weights, regions), weights

    def weights(self, projected_regions: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """alpha_t (N, R) in float32: softmax over regions, so low-precision runs stay normalised."""
        query = packed_linear.linear(
            hidden, self.hidden_projection.weight, self.hidden_projection.bias
        )
        return self.weights_from_query(projected_regions, query)

    def weights_from_query(self, projected_regions: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """``weights`` given the hidden state's projection W_h h_t (N, A) already."""
        images, region_count, _ = projected_regions.shape
        query = query.view(images, rows_per_image(query.size(0), images), 1, query.size(1))
        keys = projected_regions.unsqueeze(1)
        if torch.is_grad_enabled() or keys.device.type != "cpu":
            energies = self.score(torch.tanh(keys + query)).squeeze(3)
        else:
            energies = self._cpu_inference_energies(keys, query)
        return torch.softmax(energies.float(), dim=2).view(-1, region_count)

    def _cpu_inference_energies(self, keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """w^T tanh(k + q) + b for (B, 1, R, A) keys and (B, K, 1, A) queries, computed as
        2 w^T sigmoid(2(k + q)) + (b - sum w), since tanh x = 2 sigmoid(2x) - 1: the same to
        float rounding, and sigmoid is about twice as fast as tanh on a CPU. The largest
        elementwise work of a decoding step (B x K x R x A values) runs a few images at a time,
        so that its temporary stays in cache instead of being ~30 MB for 100 images' beams."""
        weight = 2.0 * self.score.weight
        bias = self.score.bias - self.score.weight.sum()
        images, per_image, region_count, size = keys.size(0), query.size(1), keys.size(2), keys.size(3)
        group = max(1, ENERGY_GROUP_VALUES // (per_image * region_count * size))
        energies = [
            nn.functional.linear(
                (keys[start : start + group] + query[start : start + group]).mul_(2.0).sigmoid_(),
                weight,
                bias,
            ).squeeze(3)
            for start in range(0, max(images, 1), group)  # one empty group for no images
        ]
        return energies[0] if len(energies) == 1 else torch.cat(energies)


ENERGY_GROUP_VALUES = 1 << 19
"""About 2 MB of float32: the temporary of ``_cpu_inference_energies`` per group of images (6
images of 3 beams with the shipped model). With the sigmoid form, it computes 100 images'
energies ~4x faster than ``score(tanh(k + q))`` at once on the 2-core CPU
(benchmarks/decode_profile.py)."""


def rows_per_image(rows: int, images: int) -> int:
    """How many consecutive states share each image's regions (see ``SoftAttention.forward``)."""
    if images == 0 and rows == 0:
        return 1  # an empty batch
    if images == 0 or rows % images:
        raise ValueError(f"{rows} decoder states cannot share the regions of {images} images")
    return rows // images


def weighted_sum(weights: torch.Tensor, per_image: torch.Tensor) -> torch.Tensor:
    """(N, R) weights over (B, R, X) rows of each image -> (N, X): sum_i alpha_ti x_i, with N // B
    consecutive weight rows per image."""
    images, region_count, _ = per_image.shape
    grouped = weights.view(images, rows_per_image(weights.size(0), images), region_count)
    return torch.bmm(grouped, per_image).view(weights.size(0), per_image.size(2))


def doubly_stochastic_penalty(alphas: torch.Tensor, step_mask: torch.Tensor) -> torch.Tensor:
    """Show, Attend and Tell's regulariser: sum_i (1 - sum_t alpha_ti)^2, averaged over images.

    It pushes the decoder to look at every region at some point of the caption. ``alphas`` is
    (B, T, R); ``step_mask`` (B, T) is 1 for real words so that padding adds no attention.
    """
    return coverage_penalty((alphas * step_mask.unsqueeze(2)).sum(dim=1))


def coverage_penalty(attention_per_region: torch.Tensor) -> torch.Tensor:
    """``doubly_stochastic_penalty`` from each caption's total attention per region (B, R)."""
    return ((1.0 - attention_per_region) ** 2).sum(dim=1).mean()
