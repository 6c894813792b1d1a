"""Attention figures: the spotlight follows the attention, odd pictures draw, names do not clash."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from captioner.visualization import figure_path, plot_attention, spotlight, stretch, upsample_attention


def test_upsampled_map_peaks_where_the_attention_does():
    attention = np.full((7, 7), 1 / 49)
    attention[1, 5] = 0.3
    smooth = upsample_attention(attention, (70, 140))  # (width, height)
    assert smooth.shape == (140, 70)
    y, x = np.unravel_index(np.argmax(smooth), smooth.shape)
    assert 5 * 10 <= x < 6 * 10 and 1 * 20 <= y < 2 * 20
    assert smooth.max() == pytest.approx(1.0)


def test_spotlight_keeps_the_looked_at_region_bright_and_dims_the_rest():
    pixels = np.full((70, 70, 3), 200, np.uint8)
    attention = np.zeros((7, 7))
    attention[3, 3] = 1.0
    lit = spotlight(pixels, attention)
    assert lit[35, 35].tolist() == [200, 200, 200]
    assert lit[2, 2].max() < 60
    # A flat map (no preference) leaves the photo as it is rather than dividing by zero.
    assert (spotlight(pixels, np.full((7, 7), 1 / 49)) == pixels).all()
    assert (stretch(np.array([2.0, 2.0])) == 1).all()


@pytest.mark.parametrize("size", [(1, 1), (400, 1), (1, 400), (640, 427), (64, 64)])
def test_figures_draw_for_any_picture_shape(tmp_path, size):
    image = Image.new("RGB", size, (120, 80, 40))
    words = ["a", "long", "caption", "about", "an", "odd", "shape"]
    out = plot_attention(image, words, np.random.default_rng(0).random((len(words) + 1, 7, 7)), tmp_path / "f.png")
    with Image.open(out) as drawn:
        assert drawn.width > 800 and drawn.height > 100


def test_a_caption_without_words_draws_just_the_photo(tmp_path):
    out = plot_attention(Image.new("RGB", (30, 20)), [], np.zeros((0, 7, 7)), tmp_path / "empty.pdf")
    assert out.read_bytes().startswith(b"%PDF")


def test_attention_must_cover_every_word(tmp_path):
    with pytest.raises(ValueError, match="attention must be"):
        plot_attention(Image.new("RGB", (8, 8)), ["a", "dog"], np.zeros((1, 7, 7)), tmp_path / "x.png")


def test_figure_names_do_not_clash_for_photos_with_one_name():
    taken: set[Path] = set()
    names = [figure_path("out", source, taken).name for source in ("a/dog.jpg", "b/dog.png", "dog.jpg", "cat.jpg")]
    assert names == ["dog_attention.png", "dog_attention_2.png", "dog_attention_3.png", "cat_attention.png"]
