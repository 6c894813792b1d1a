"""Attention figures: the photo, then one panel per word with where the model looked.

The Show, Attend and Tell figure: each word's attention map is upsampled smoothly (bicubic) to
the photo's size and laid over a dimmed copy of it. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def upsample_attention(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(grid_h, grid_w) weights -> (height, width) map scaled to [0, 1]; ``size`` is (w, h)."""
    grid = torch.as_tensor(attention, dtype=torch.float32)[None, None]
    smooth = F.interpolate(grid, size=(size[1], size[0]), mode="bicubic", align_corners=False)[0, 0]
    smooth = smooth.clamp(min=0)
    peak = float(smooth.max())
    return (smooth / peak).numpy() if peak > 0 else smooth.numpy()


def plot_attention(
    image: Image.Image,
    words: list[str],
    attention: np.ndarray,
    out_path: str | Path,
    title: str | None = None,
    columns: int = 5,
    panel_inches: float = 2.4,
) -> Path:
    """Write the figure to ``out_path`` (PNG, PDF or SVG by extension) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    display = image.convert("RGB")
    display.thumbnail((448, 448))
    pixels = np.asarray(display)
    panels = 1 + len(words)
    columns = min(columns, panels)
    rows = math.ceil(panels / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(panel_inches * columns, panel_inches * rows + 0.6))
    axes = np.atleast_1d(axes).ravel()
    for axis in axes:
        axis.axis("off")
    axes[0].imshow(pixels)
    axes[0].set_title("photo", fontsize=11)
    for axis, word, weights in zip(axes[1:], words, attention):
        axis.imshow(pixels)
        axis.imshow(upsample_attention(weights, display.size), cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        axis.set_title(word, fontsize=12)
    figure.suptitle(title if title is not None else " ".join(words), fontsize=13)
    figure.tight_layout()
    figure.savefig(out_path, dpi=100)
    plt.close(figure)
    return out_path
