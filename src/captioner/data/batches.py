"""From records to batches of tensors, in an order fixed by a seed.

Owns: the training dataset (which caption goes with which image each epoch), the evaluation
dataset (images only), collation into padded batches, and deterministic ``DataLoader``s. The model
input of a record is whatever the ``load_input`` callable returns (a preprocessed image tensor or
a cached feature grid), so this module knows nothing about encoders, models or features.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from captioner.data.records import CaptionRecord
from captioner.data.text import Vocabulary, tokenize_caption

InputLoader = Callable[[CaptionRecord, int], torch.Tensor]
"""``load_input(record, record_index) -> tensor``: the model input for one record."""


class TrainingItem(NamedTuple):
    inputs: torch.Tensor
    caption_ids: torch.Tensor  # (T,) int64: <start> words <end>
    record_index: int


class GroupedItem(NamedTuple):
    inputs: torch.Tensor
    caption_ids: list[torch.Tensor]  # the image's captions of the epoch, each <start> words <end>
    record_index: int


@dataclass
class CaptionBatch:
    """A padded training batch. ``captions`` include ``<start>`` and ``<end>``; so do ``lengths``.

    ``inputs`` has a row per caption, or (``captions_per_input`` > 1, ``collate_caption_groups``)
    a row per image shared by that many consecutive caption rows: image 0's captions, then image
    1's, ... ``len`` counts captions either way.
    """

    inputs: torch.Tensor  # (B, ...) or (B // captions_per_input, ...)
    captions: torch.Tensor  # (B, T) int64, padded with Vocabulary.pad_id
    lengths: torch.Tensor  # (B,) int64
    record_indices: torch.Tensor  # (B,) int64
    captions_per_input: int = 1

    def to(self, device: torch.device | str, non_blocking: bool = True) -> CaptionBatch:
        return CaptionBatch(
            inputs=self.inputs.to(device, non_blocking=non_blocking),
            captions=self.captions.to(device, non_blocking=non_blocking),
            lengths=self.lengths.to(device, non_blocking=non_blocking),
            record_indices=self.record_indices.to(device, non_blocking=non_blocking),
            captions_per_input=self.captions_per_input,
        )

    def pin_memory(self) -> CaptionBatch:
        # DataLoader(pin_memory=True) calls this on custom batch types.
        return CaptionBatch(
            self.inputs.pin_memory(),
            self.captions.pin_memory(),
            self.lengths.pin_memory(),
            self.record_indices.pin_memory(),
            self.captions_per_input,
        )

    def input_rows(self, start: int, stop: int) -> CaptionBatch:
        """Rows ``start:stop`` of ``inputs`` with all the captions that share them."""
        first, last = start * self.captions_per_input, stop * self.captions_per_input
        return CaptionBatch(
            self.inputs[start:stop],
            self.captions[first:last],
            self.lengths[first:last],
            self.record_indices[first:last],
            self.captions_per_input,
        )

    def __len__(self) -> int:
        return int(self.captions.shape[0])


@dataclass
class ImageBatch:
    """A batch of model inputs with the index of the record each came from."""

    inputs: torch.Tensor
    record_indices: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str, non_blocking: bool = True) -> ImageBatch:
        return ImageBatch(
            self.inputs.to(device, non_blocking=non_blocking),
            self.record_indices.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> ImageBatch:
        return ImageBatch(self.inputs.pin_memory(), self.record_indices.pin_memory())

    def __len__(self) -> int:
        return int(self.record_indices.shape[0])


class CaptionTrainingSet(Dataset[TrainingItem]):
    """Every image ``captions_per_image`` times per epoch, each time with a different caption.

    Which captions an image gets in an epoch is drawn without replacement by an RNG seeded from
    ``(seed, epoch)``; call ``set_epoch`` before each epoch (``make_loader`` does). An image with
    fewer captions than ``captions_per_image`` repeats them only after using each once. Captions
    are tokenized and encoded once here; ones that tokenize to nothing are dropped, and images left
    without captions are not served (their record indices are simply absent).

    Workers receive a copy of this object when an epoch's iterator starts, so do not combine
    ``set_epoch`` with ``persistent_workers=True``.
    """

    def __init__(
        self,
        records: Sequence[CaptionRecord],
        vocabulary: Vocabulary,
        load_input: InputLoader,
        captions_per_image: int = 1,
        max_length: int | None = None,
        seed: int = 0,
    ) -> None:
        if captions_per_image < 1:
            raise ValueError(f"captions_per_image must be at least 1, got {captions_per_image}")
        self.records = list(records)
        self.vocabulary = vocabulary
        self.load_input = load_input
        self.captions_per_image = captions_per_image
        self.max_length = max_length
        self.seed = seed
        self.epoch = 0

        self._encoded: dict[int, list[torch.Tensor]] = {}
        for index, record in enumerate(self.records):
            encoded = encode_captions(record.captions, vocabulary, max_length)
            if encoded:
                self._encoded[index] = encoded
        if not self._encoded:
            raise ValueError("no record has a caption with any words; nothing to train on")
        self._served = np.array(sorted(self._encoded), dtype=np.int64)
        self._choices = np.zeros((len(self._served), captions_per_image), dtype=np.int64)
        self.set_epoch(0)

    @property
    def record_indices(self) -> list[int]:
        """Indices (into ``records``) of the images served, each ``captions_per_image`` times."""
        return self._served.tolist()

    def set_epoch(self, epoch: int) -> None:
        """Choose this epoch's captions; the same ``(seed, epoch)`` always gives the same choice."""
        self.epoch = epoch
        rng = np.random.default_rng([self.seed, epoch])
        by_count: dict[int, list[int]] = defaultdict(list)
        for slot, index in enumerate(self._served):
            by_count[len(self._encoded[int(index)])].append(slot)
        # One vectorized permutation per group of images with the same number of captions.
        for count in sorted(by_count):
            slots = np.array(by_count[count])
            permutations = rng.random((len(slots), count)).argsort(axis=1)
            columns = np.arange(self.captions_per_image) % count
            self._choices[slots] = permutations[:, columns]

    def __len__(self) -> int:
        return len(self._served) * self.captions_per_image

    @property
    def image_count(self) -> int:
        """Images served (slots): item ``slot + draw * image_count`` is draw ``draw`` of the image in ``slot``."""
        return len(self._served)

    def __getitem__(self, item: int) -> TrainingItem:
        if not 0 <= item < len(self):
            raise IndexError(f"index {item} out of range for {len(self)} items")
        slot, draw = item % len(self._served), item // len(self._served)
        record_index = int(self._served[slot])
        caption = self._encoded[record_index][int(self._choices[slot, draw])]
        return TrainingItem(self.load_input(self.records[record_index], record_index), caption, record_index)

    def image_captions(self, slot: int) -> tuple[int, list[torch.Tensor]]:
        """The record index of the image in ``slot`` and its ``captions_per_image`` captions of
        this epoch in draw order: those of items ``slot``, ``slot + image_count``, ..."""
        if not 0 <= slot < len(self._served):
            raise IndexError(f"slot {slot} out of range for {len(self._served)} images")
        record_index = int(self._served[slot])
        encoded = self._encoded[record_index]
        return record_index, [encoded[int(choice)] for choice in self._choices[slot]]


class ImageCaptionGroups(Dataset[GroupedItem]):
    """A ``CaptionTrainingSet`` by image (``data.group_captions``): item ``slot`` is the image in
    that slot, its input loaded once, with the ``captions_per_image`` captions the training set
    serves it this epoch (its items ``slot``, ``slot + S``, ...), so that a batch of these holds
    every caption of its images and the decoder projects each image's regions once.
    ``set_epoch`` chooses the captions as the training set's does."""

    def __init__(self, captions: CaptionTrainingSet) -> None:
        self.captions = captions

    def set_epoch(self, epoch: int) -> None:
        self.captions.set_epoch(epoch)

    def __len__(self) -> int:
        return self.captions.image_count

    def __getitem__(self, slot: int) -> GroupedItem:
        record_index, caption_ids = self.captions.image_captions(slot)
        inputs = self.captions.load_input(self.captions.records[record_index], record_index)
        return GroupedItem(inputs, caption_ids, record_index)


def encode_captions(captions: Sequence[str], vocabulary: Vocabulary, max_length: int | None = None) -> list[torch.Tensor]:
    """Each caption as ``<start> ids <end>`` (at most ``max_length`` words); captions that
    tokenize to nothing are dropped."""
    return [
        torch.tensor(vocabulary.encode(tokens, max_length), dtype=torch.long)
        for tokens in (tokenize_caption(c) for c in captions)
        if tokens
    ]


def collate_captions(items: Sequence[TrainingItem]) -> CaptionBatch:
    """Stack inputs and pad captions on the right with ``<pad>``, longest caption first: the
    order teacher forcing computes in (``ShowAttendTellDecoder.forward``), so that it need not
    reorder the batch's regions."""
    items = sorted(items, key=lambda item: -len(item.caption_ids))
    lengths = torch.tensor([len(item.caption_ids) for item in items], dtype=torch.long)
    captions = torch.full((len(items), int(lengths.max())), Vocabulary.pad_id, dtype=torch.long)
    for row, item in enumerate(items):
        captions[row, : len(item.caption_ids)] = item.caption_ids
    return CaptionBatch(
        inputs=torch.stack([item.inputs for item in items]),
        captions=captions,
        lengths=lengths,
        record_indices=torch.tensor([item.record_index for item in items], dtype=torch.long),
    )


def collate_caption_groups(items: Sequence[GroupedItem]) -> CaptionBatch:
    """One row of inputs per image and its captions after it in the caption rows, image-major and
    in draw order (not sorted by length: the decoder sorts, and each image's captions must stay
    together); padded on the right with ``<pad>`` like ``collate_captions``."""
    per_image = len(items[0].caption_ids)
    if per_image < 1 or any(len(item.caption_ids) != per_image for item in items):
        raise ValueError("every image of a grouped batch needs the same number of captions (at least one)")
    caption_ids = [caption for item in items for caption in item.caption_ids]
    lengths = torch.tensor([len(caption) for caption in caption_ids], dtype=torch.long)
    captions = torch.full((len(caption_ids), int(lengths.max())), Vocabulary.pad_id, dtype=torch.long)
    for row, caption in enumerate(caption_ids):
        captions[row, : len(caption)] = caption
    return CaptionBatch(
        inputs=torch.stack([item.inputs for item in items]),
        captions=captions,
        lengths=lengths,
        record_indices=torch.tensor([item.record_index for item in items], dtype=torch.long).repeat_interleave(per_image),
        captions_per_input=per_image,
    )


class ImageSet(Dataset[tuple[torch.Tensor, int]]):
    """Each record once, for evaluation and captioning: ``(inputs, record_index)``."""

    def __init__(self, records: Sequence[CaptionRecord], load_input: InputLoader) -> None:
        self.records = list(records)
        self.load_input = load_input

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.load_input(self.records[index], index), index


def collate_images(items: Sequence[tuple[torch.Tensor, int]]) -> ImageBatch:
    return ImageBatch(
        inputs=torch.stack([inputs for inputs, _ in items]),
        record_indices=torch.tensor([index for _, index in items], dtype=torch.long),
    )


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; derive numpy/random seeds from it too.
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def make_loader(
    dataset: Dataset[Any],
    batch_size: int,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    epoch: int = 0,
    drop_last: bool = False,
    collate_fn: Callable[[Any], Any] | None = None,
    skip_batches: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader[Any]:
    """A ``DataLoader`` whose order (and caption choice) depends only on ``(seed, epoch)``.

    Calls ``dataset.set_epoch(epoch)`` when the dataset has one; picks ``collate_captions``,
    ``collate_caption_groups`` or ``collate_images`` for this module's datasets; pins memory when
    CUDA is available. ``batch_size`` counts the dataset's items: captions of a
    ``CaptionTrainingSet``, images (each with all its captions) of ``ImageCaptionGroups``.
    ``skip_batches`` starts the epoch's fixed order that many batches in (resuming mid-epoch)
    without loading the skipped items. With ``world_size`` > 1, ``batch_size`` is the *global*
    batch: every process walks the same order and takes items ``rank::world_size`` of each batch.
    There are ``batch_count(len(dataset), batch_size, world_size, drop_last)`` batches in all.
    """
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch)
    if collate_fn is None:
        if isinstance(dataset, CaptionTrainingSet):
            collate_fn = collate_captions
        elif isinstance(dataset, ImageCaptionGroups):
            collate_fn = collate_caption_groups
        else:
            collate_fn = collate_images
    generator = torch.Generator()
    generator.manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0] >> 1))
    size = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(size, generator=generator).tolist() if shuffle else list(range(size))
    stop = _stop(size, batch_size, world_size, drop_last)
    batches = [order[start : start + batch_size][rank::world_size] for start in range(0, stop, batch_size)]
    return DataLoader(
        dataset,
        batch_sampler=batches[skip_batches:],
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        worker_init_fn=_seed_worker,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
    )


def _stop(size: int, batch_size: int, world_size: int, drop_last: bool) -> int:
    stop = size - size % batch_size if drop_last else size
    # A last batch smaller than the number of processes would leave some of them nothing to do.
    return min(stop, size - size % batch_size) if size % batch_size < world_size else stop


def batch_count(size: int, batch_size: int, world_size: int = 1, drop_last: bool = False) -> int:
    """How many batches ``make_loader`` makes of ``size`` items in an epoch (before ``skip_batches``)."""
    return math.ceil(_stop(size, batch_size, world_size, drop_last) / batch_size)
