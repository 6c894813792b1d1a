"""Classifier guidance: name what is really in the photo, in words a caption would use.

Owns turning the encoder's ImageNet labels into caption words (a hand-written map of all 1,000
categories, ``words``) and those words into decoding constraints and back into text
(``guide``): a model trained on Flickr8k knows "dog" but not "koala", so a confident
classifier makes the constrained beam search (``captioner.decoding.constrained``) name the
object, through a stand-in word of the same kind when the vocabulary lacks it.
"""

from __future__ import annotations

from captioner.guidance.guide import (
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    DEFAULT_TRUST,
    Guide,
    ImageGuidance,
    Label,
    region_classifier,
)
from captioner.guidance.words import CaptionWord, caption_words, imagenet_table, imagenet_word

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_THRESHOLD",
    "DEFAULT_TRUST",
    "CaptionWord",
    "Guide",
    "ImageGuidance",
    "Label",
    "caption_words",
    "imagenet_table",
    "imagenet_word",
    "region_classifier",
]
