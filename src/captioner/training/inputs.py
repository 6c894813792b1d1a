"""How a record becomes the model's input: preprocessed pixels, or a cached feature grid.

The data layer's datasets take any ``load_input(record, index) -> Tensor``; these are the two
the training loop and evaluation use. They are small classes (not lambdas) so DataLoader
workers can receive them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

import torch

from captioner.data.images import load_rgb_image
from captioner.data.records import CaptionRecord
from captioner.data.text import tokenize_caption
from captioner.encoders.cache import FeatureCache
from captioner.models.captioning import CaptioningModel


class InputKind(str, Enum):
    PIXELS = "pixels"
    """Preprocessed images: the encoder runs in the loop."""
    REGIONS = "regions"
    """Cached final region grids: the encoder never runs."""
    TRUNK = "trunk"
    """Cached activations of the frozen trunk: only the fine-tuned head runs."""


class PixelInput:
    def __init__(self, preprocess: Callable) -> None:
        self.preprocess = preprocess

    def __call__(self, record: CaptionRecord, index: int) -> torch.Tensor:
        return self.preprocess(load_rgb_image(record.image_path))


class CachedInput:
    def __init__(self, cache: FeatureCache) -> None:
        self.cache = cache

    def __call__(self, record: CaptionRecord, index: int) -> torch.Tensor:
        return self.cache[self.cache.row_of(record)]


class MirroredInput:
    """Cached features that are, at random, those of the mirrored photo.

    ``mirrorable`` names the images that may be mirrored (by image id); the others always read
    ``plain``. The draw uses torch's global generator, which the training loop seeds and saves
    for resuming, so a rerun with the same seed reads the same grids.
    """

    def __init__(self, plain: FeatureCache, mirrored: FeatureCache, mirrorable: set[str], probability: float) -> None:
        self.plain = plain
        self.mirrored = mirrored
        self.mirrorable = mirrorable
        self.probability = probability

    def __call__(self, record: CaptionRecord, index: int) -> torch.Tensor:
        if str(record.image_id) in self.mirrorable and torch.rand(()) < self.probability:
            return self.mirrored[self.mirrored.row_of(record)]
        return self.plain[self.plain.row_of(record)]


def mirrorable_images(records: Sequence[CaptionRecord], mirrored: FeatureCache) -> set[str]:
    """Ids of the images whose mirror image is cached and whose captions never say left or right."""
    sided = {"left", "right"}
    return {
        str(record.image_id)
        for record in records
        if record in mirrored and not any(sided & set(tokenize_caption(c)) for c in record.captions)
    }


def regions_from_inputs(
    model: CaptioningModel, inputs: torch.Tensor, kind: InputKind
) -> torch.Tensor:
    """Bring any input kind to (B, R, D) region features."""
    if kind is InputKind.PIXELS:
        return model.encode(inputs)
    if kind is InputKind.TRUNK:
        return model.encoder.forward_head(inputs)
    return inputs


def records_in_cache(records: Sequence[CaptionRecord], cache: FeatureCache) -> list[CaptionRecord]:
    """Records whose image was cached (the cache skipped and reported unreadable images)."""
    return [record for record in records if record in cache]
