"""Attention figures: the photo, then one panel per word with where the model looked.

Owns: drawing the Show, Attend and Tell figure from a picture, its words and their attention
maps (``plot_attention``), the same from a ``CaptionResult`` (``plot_result``), and naming one
figure per photo in a folder (``figure_path``). Drawn headless with matplotlib's Agg.

Each word's map is upsampled smoothly (bicubic) to the photo's size and drawn as a spotlight:
the photo at full brightness where the model looked most, dimmed where it looked least. Soft
attention over a 7x7 grid is often nearly uniform, so each map is stretched from its own minimum
to its maximum (as the paper's figures do); each panel says how peaked the map really was
("peak 1.7x": the largest weight over the uniform weight 1/regions), so a flat map is not
mistaken for a confident one.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

if TYPE_CHECKING:
    from captioner.api import CaptionResult

FIGURE_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")
"""Extensions ``--out`` may end with to name one figure file rather than a folder."""

# Brightness left where a word's attention is lowest: dark enough that the bright spot stands
# out, light enough that the photo stays recognizable in every panel.
_DIMMEST = 0.22
_PANEL_PIXELS = 320


def upsample_attention(attention: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(grid_h, grid_w) weights -> (height, width) map scaled to [0, 1] by its peak; ``size`` is (w, h)."""
    grid = torch.as_tensor(np.asarray(attention), dtype=torch.float32)[None, None]
    smooth = F.interpolate(grid, size=(size[1], size[0]), mode="bicubic", align_corners=False)[0, 0]
    smooth = smooth.clamp(min=0)
    peak = float(smooth.max())
    return (smooth / peak).numpy() if peak > 0 else smooth.numpy()


def stretch(values: np.ndarray) -> np.ndarray:
    """``values`` mapped linearly from their own min..max to 0..1 (all ones when flat)."""
    low, high = float(values.min()), float(values.max())
    # Relative: a uniform map comes back from bicubic upsampling with rounding ripples that a
    # stretch would blow up into a pattern that is not there.
    if high - low <= 1e-3 * max(abs(high), 1e-12):
        return np.ones_like(values)
    return (values - low) / (high - low)


def spotlight(pixels: np.ndarray, attention: np.ndarray) -> np.ndarray:
    """The photo (H, W, 3 uint8) lit by one word's (grid_h, grid_w) attention, as uint8."""
    height, width = pixels.shape[:2]
    light = stretch(upsample_attention(attention, (width, height)))
    shade = _DIMMEST + (1.0 - _DIMMEST) * light
    return np.clip(pixels.astype(np.float32) * shade[..., None], 0, 255).astype(np.uint8)


def plot_attention(
    image: Image.Image,
    words: list[str],
    attention: np.ndarray,
    out_path: str | Path,
    title: str | None = None,
    columns: int = 5,
    panel_inches: float = 2.4,
) -> Path:
    """Write the figure to ``out_path`` (PNG, PDF, SVG or JPEG by extension) and return the path.

    ``attention`` is (len(words), grid_h, grid_w), as in ``CaptionResult.attention``; rows past
    ``len(words)`` (e.g. an end token's) are not drawn.
    """
    # A bare Figure (no pyplot) draws with Agg and keeps no global state, so figures can be
    # drawn from several threads (a server) and the user's pyplot backend is left alone.
    from matplotlib.figure import Figure

    attention = np.asarray(attention)
    if attention.ndim != 3 or attention.shape[0] < len(words):
        raise ValueError(f"attention must be (words, grid_h, grid_w) with >= {len(words)} rows, got {attention.shape}")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    display = image.convert("RGB")
    display.thumbnail((_PANEL_PIXELS, _PANEL_PIXELS))
    if max(display.size) < _PANEL_PIXELS // 2:
        # Small pictures (64 px scenes, icons) are enlarged by whole pixels so that the smooth
        # attention map is not drawn as a handful of blocks.
        factor = _PANEL_PIXELS // max(display.size)
        display = display.resize((display.width * factor, display.height * factor), Image.Resampling.NEAREST)
    pixels = np.asarray(display)
    height, width = pixels.shape[:2]
    uniform = 1.0 / (attention.shape[1] * attention.shape[2])

    panels = 1 + len(words)
    columns = max(1, min(columns, panels))
    rows = math.ceil(panels / columns)
    # Panels are placed by hand (inches) rather than by tight_layout, which ignores the notes
    # under the words: every panel gets the photo's aspect ratio and the same label band.
    gap, label_h = 0.12, 0.55
    scale = panel_inches / max(width, height)
    image_w, image_h = width * scale, height * scale
    cell_w = max(image_w, 1.6)  # tall photos still leave room for a long word above them
    figure_w = columns * cell_w + (columns + 1) * gap
    # A 15 pt character is about 0.12 inch wide: wrap the caption to the figure's width.
    caption = title if title is not None else " ".join(words)
    caption_lines = textwrap.wrap(caption, width=max(12, int(figure_w / 0.12))) or [""]
    title_h = 0.35 + 0.28 * len(caption_lines)
    figure_h = title_h + rows * (label_h + image_h) + gap
    figure = Figure(figsize=(figure_w, figure_h))
    labels = [("photo", None), *((word, float(np.max(w)) / uniform) for word, w in zip(words, attention))]
    for index, (label, peak) in enumerate(labels):
        row, column = divmod(index, columns)
        left = gap + column * (cell_w + gap) + (cell_w - image_w) / 2
        bottom = figure_h - title_h - row * (label_h + image_h) - label_h - image_h
        axis = figure.add_axes((left / figure_w, bottom / figure_h, image_w / figure_w, image_h / figure_h))
        axis.axis("off")
        axis.imshow(pixels if peak is None else spotlight(pixels, attention[index - 1]))
        word_y = (bottom + image_h + label_h * 0.42) / figure_h
        note_y = (bottom + image_h + label_h * 0.08) / figure_h
        center = (left + image_w / 2) / figure_w
        if peak is None:
            figure.text(center, word_y, label, ha="center", va="bottom", fontsize=12, color="0.4")
        else:
            figure.text(center, word_y, label, ha="center", va="bottom", fontsize=14, fontweight="bold")
            figure.text(center, note_y, f"peak {peak:.1f}x uniform", ha="center", va="bottom", fontsize=8, color="0.45")
    figure.text(0.5, 1 - title_h * 0.5 / figure_h, "\n".join(caption_lines), ha="center", va="center", fontsize=15)
    figure.savefig(out_path, dpi=100)
    return out_path


def plot_result(result: CaptionResult, out_path: str | Path, image: Image.Image | None = None) -> Path:
    """Draw the figure of a ``Captioner.caption`` result; ``image`` defaults to reading
    ``result.source`` (a path). Raises ``ValueError`` for a result that has no caption."""
    if not result.ok or result.attention is None:
        raise ValueError(f"{result.source} has no caption to draw: {result.error or 'no attention maps'}")
    if image is None:
        from captioner.data.images import load_rgb_image

        image = load_rgb_image(result.source)
    return plot_attention(image, result.words, result.attention, out_path, title=result.caption)


def figure_path(out_dir: str | Path, source: str | Path, taken: set[Path] | None = None) -> Path:
    """``out_dir/<stem>_attention.png`` for a photo; with ``taken``, a name not yet in it
    (``<stem>_attention_2.png``, ...) so two photos with one name do not overwrite each other."""
    stem = Path(source).stem or "image"
    candidate = Path(out_dir) / f"{stem}_attention.png"
    number = 2
    while taken is not None and candidate in taken:
        candidate = Path(out_dir) / f"{stem}_attention_{number}.png"
        number += 1
    if taken is not None:
        taken.add(candidate)
    return candidate
