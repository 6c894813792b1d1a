"""Training/evaluation datasets, collation and seeded loaders."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from captioner.data.batches import (
    CaptionBatch,
    CaptionTrainingSet,
    ImageBatch,
    ImageSet,
    collate_captions,
    make_loader,
)
from captioner.data.records import CaptionRecord
from captioner.data.text import Vocabulary, tokenize_caption

torch.set_num_threads(1)

CAPTIONS = ("one", "two two", "three three three", "four four four four", "five five five five five")


def _records(count: int = 6) -> list[CaptionRecord]:
    return [CaptionRecord(f"img{i}.png", CAPTIONS, "train", i) for i in range(count)]


def _vocabulary(records) -> Vocabulary:
    return Vocabulary.build((tokenize_caption(c) for r in records for c in r.captions), min_count=1)


def _input(record: CaptionRecord, index: int) -> torch.Tensor:
    return torch.full((2, 3), float(index))


def _caption_words(dataset: CaptionTrainingSet, item) -> str:
    return " ".join(dataset.vocabulary.decode(item.caption_ids))


def test_item_has_input_caption_ids_and_record_index():
    records = _records(3)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, seed=1)
    assert len(dataset) == 3
    item = dataset[2]
    assert item.record_index == 2 and torch.equal(item.inputs, torch.full((2, 3), 2.0))
    assert item.caption_ids.dtype == torch.long
    assert item.caption_ids[0] == Vocabulary.start_id and item.caption_ids[-1] == Vocabulary.end_id
    assert _caption_words(dataset, item) in CAPTIONS


def test_collate_pads_with_pad_id_and_reports_lengths_with_start_and_end():
    records = _records(4)
    vocabulary = _vocabulary(records)
    dataset = CaptionTrainingSet(records, vocabulary, _input, seed=0)
    items = [dataset[i] for i in range(4)]
    batch = collate_captions(items)
    assert isinstance(batch, CaptionBatch)
    assert batch.inputs.shape == (4, 2, 3)
    word_counts = [len(_caption_words(dataset, item).split()) for item in items]
    assert batch.lengths.tolist() == [n + 2 for n in word_counts]
    assert batch.captions.shape == (4, max(word_counts) + 2)
    for row, length in enumerate(batch.lengths.tolist()):
        assert batch.captions[row, length - 1] == vocabulary.end_id
        assert (batch.captions[row, length:] == vocabulary.pad_id).all()
    assert batch.record_indices.tolist() == [0, 1, 2, 3]
    moved = batch.to("cpu")
    assert torch.equal(moved.captions, batch.captions) and len(moved) == 4


def test_captions_per_image_uses_different_captions_of_each_image():
    records = _records(5)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, captions_per_image=3, seed=0)
    assert len(dataset) == 15
    seen: dict[int, list[str]] = {}
    for index in range(len(dataset)):
        item = dataset[index]
        seen.setdefault(item.record_index, []).append(_caption_words(dataset, item))
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert all(len(c) == 3 and len(set(c)) == 3 for c in seen.values())


def test_more_draws_than_captions_uses_every_caption_before_repeating():
    records = [CaptionRecord("a.png", ("red", "blue"), "train", 0)]
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, captions_per_image=5, seed=3)
    counts = Counter(_caption_words(dataset, dataset[i]) for i in range(5))
    assert sorted(counts.values()) == [2, 3]


def test_caption_choice_is_seeded_and_changes_across_epochs():
    records = _records(40)
    vocabulary = _vocabulary(records)

    def choices(seed: int, epoch: int) -> list[str]:
        dataset = CaptionTrainingSet(records, vocabulary, _input, seed=seed)
        dataset.set_epoch(epoch)
        return [_caption_words(dataset, dataset[i]) for i in range(len(dataset))]

    assert choices(0, 1) == choices(0, 1)
    assert choices(0, 1) != choices(0, 2)
    assert choices(0, 1) != choices(1, 1)
    assert len(set(choices(0, 1))) > 1


def test_max_length_truncates_words_and_keeps_end():
    records = [CaptionRecord("a.png", ("w w w w w w w w",), "train", 0)]
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, max_length=3)
    ids = dataset[0].caption_ids.tolist()
    assert len(ids) == 5 and ids[-1] == Vocabulary.end_id


def test_captions_without_words_are_dropped():
    records = [CaptionRecord("a.png", ("...",), "train", 0), CaptionRecord("b.png", ("a cat",), "train", 1)]
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input)
    assert len(dataset) == 1 and dataset[0].record_index == 1
    with pytest.raises(ValueError, match="nothing to train on"):
        CaptionTrainingSet(records[:1], _vocabulary(records), _input)


def test_loader_order_is_deterministic_for_a_seed_and_epoch():
    records = _records(30)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, seed=0)

    def order(seed: int, epoch: int) -> list[int]:
        loader = make_loader(dataset, batch_size=7, shuffle=True, seed=seed, epoch=epoch)
        return [i for batch in loader for i in batch.record_indices.tolist()]

    assert order(5, 0) == order(5, 0)
    assert order(5, 0) != order(5, 1)
    assert order(5, 0) != order(6, 0)
    assert sorted(order(5, 0)) == list(range(30))


def test_loader_with_workers_gives_the_same_batches():
    records = _records(12)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, seed=2)
    single = [b.captions for b in make_loader(dataset, 4, shuffle=True, seed=1, num_workers=0, epoch=3)]
    multi = [b.captions for b in make_loader(dataset, 4, shuffle=True, seed=1, num_workers=2, epoch=3)]
    assert all(torch.equal(a, b) for a, b in zip(single, multi, strict=True))


def test_image_set_and_collate_images():
    records = _records(5)
    images = ImageSet(records, _input)
    assert len(images) == 5 and images[3][1] == 3
    batches = list(make_loader(images, batch_size=2, shuffle=False, seed=0))
    assert all(isinstance(b, ImageBatch) for b in batches)
    assert [i for b in batches for i in b.record_indices.tolist()] == [0, 1, 2, 3, 4]
    assert batches[0].inputs.shape == (2, 2, 3) and len(batches[-1]) == 1


def test_collate_puts_the_longest_caption_first_and_keeps_each_row_together():
    from captioner.data.batches import TrainingItem

    word_counts = [1, 3, 2, 3]
    items = [
        TrainingItem(torch.full((2, 3), float(index)), torch.tensor([Vocabulary.start_id] + [5] * n + [Vocabulary.end_id]), index)
        for index, n in enumerate(word_counts)
    ]
    batch = collate_captions(items)
    assert batch.lengths.tolist() == [5, 5, 4, 3]
    assert batch.record_indices.tolist() == [1, 3, 2, 0]  # ties keep their order
    assert batch.inputs[:, 0, 0].tolist() == [1.0, 3.0, 2.0, 0.0]
    assert [int((row != Vocabulary.pad_id).sum()) for row in batch.captions] == [5, 5, 4, 3]
