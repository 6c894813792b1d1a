"""The caption record: one image and the human captions written for it.

Every reader turns its file format into a list of ``CaptionRecord``; everything downstream
(vocabulary, batches, feature cache, evaluation) reads only records, never the original files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ImageId = int | str
"""COCO ids are integers, Flickr8k ids are file names: each reader keeps the dataset's own."""


@dataclass(frozen=True)
class CaptionRecord:
    """One image with its reference captions.

    ``captions`` are the raw human sentences (not tokenized); ``split`` is ``"train"``, ``"val"``,
    ``"test"`` or a dataset's own split name (``"dev"``, ``"test-novel"``).
    """

    image_path: Path
    captions: tuple[str, ...]
    split: str
    image_id: ImageId

    def __post_init__(self) -> None:
        # Accept lists and str paths from readers but store the hashable, canonical forms.
        object.__setattr__(self, "image_path", Path(self.image_path))
        object.__setattr__(self, "captions", tuple(self.captions))
