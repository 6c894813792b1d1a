"""Training/evaluation datasets, collation and seeded loaders."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from captioner.data.batches import (
    CaptionBatch,
    CaptionTrainingSet,
    GroupedItem,
    ImageBatch,
    ImageCaptionGroups,
    ImageSet,
    batch_count,
    collate_caption_groups,
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


def _grouped(count: int = 11, per_image: int = 3, seed: int = 4) -> tuple[CaptionTrainingSet, ImageCaptionGroups]:
    records = _records(count)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, captions_per_image=per_image, seed=seed)
    return dataset, ImageCaptionGroups(dataset)


def _batch_captions(dataset: CaptionTrainingSet, batch: CaptionBatch) -> list[str]:
    return [
        " ".join(dataset.vocabulary.decode(row[:length].tolist()))
        for row, length in zip(batch.captions, batch.lengths.tolist(), strict=True)
    ]


def test_grouped_loader_serves_each_image_once_with_the_captions_the_ungrouped_set_serves():
    dataset, groups = _grouped(count=11, per_image=3)
    batches = list(make_loader(groups, batch_size=4, shuffle=True, seed=5, epoch=2))
    assert [batch.inputs.shape[0] for batch in batches] == [4, 4, 3]  # the last partial batch is kept
    served: dict[int, list[str]] = {}
    for batch in batches:
        assert isinstance(batch, CaptionBatch) and batch.captions_per_input == 3
        assert batch.inputs.shape[1:] == (2, 3) and len(batch) == 3 * batch.inputs.shape[0]
        # Image-major: each input row's three captions follow each other, in the input rows' order.
        images = batch.inputs[:, 0, 0].long()
        assert batch.record_indices.tolist() == images.repeat_interleave(3).tolist()
        words = _batch_captions(dataset, batch)
        for row, image in enumerate(images.tolist()):
            assert image not in served
            served[image] = words[3 * row : 3 * row + 3]
    assert sorted(served) == list(range(11))
    assert all(len(set(captions)) == 3 for captions in served.values())
    # The same captions, in draw order, as the ungrouped set serves the image in that epoch.
    dataset.set_epoch(2)
    expected: dict[int, list[str]] = {}
    for item in range(len(dataset)):
        expected.setdefault(dataset[item].record_index, []).append(_caption_words(dataset, dataset[item]))
    assert served == expected


def test_grouped_batches_are_not_sorted_by_length():
    # Captions of different lengths, so a sort would move rows away from their image.
    dataset, groups = _grouped(count=8, per_image=5)
    for batch in make_loader(groups, batch_size=8, shuffle=True, seed=0, epoch=1):
        assert batch.lengths.tolist() != sorted(batch.lengths.tolist(), reverse=True)
        assert batch.record_indices.tolist() == batch.inputs[:, 0, 0].long().repeat_interleave(5).tolist()


def test_grouped_loader_order_is_deterministic_by_seed_and_epoch():
    dataset, groups = _grouped(count=30, per_image=2)

    def order(seed: int, epoch: int) -> list[tuple[int, str]]:
        loader = make_loader(groups, batch_size=4, shuffle=True, seed=seed, epoch=epoch)
        return [
            (index, words)
            for batch in loader
            for index, words in zip(batch.record_indices.tolist(), _batch_captions(dataset, batch), strict=True)
        ]

    assert order(5, 0) == order(5, 0)
    assert order(5, 0) != order(5, 1)
    assert order(5, 0) != order(6, 0)
    assert sorted(set(index for index, _ in order(5, 0))) == list(range(30))


def test_grouped_loader_with_workers_gives_the_same_batches():
    _, groups = _grouped(count=12, per_image=2)
    single = list(make_loader(groups, 5, shuffle=True, seed=1, num_workers=0, epoch=3))
    multi = list(make_loader(groups, 5, shuffle=True, seed=1, num_workers=2, epoch=3))
    assert len(single) == len(multi) == 3
    for a, b in zip(single, multi, strict=True):
        assert torch.equal(a.captions, b.captions) and torch.equal(a.inputs, b.inputs)


@pytest.mark.parametrize(("count", "batch_size"), [(11, 4), (9, 4), (12, 4)])
def test_grouped_rank_split_gives_each_process_whole_images(count: int, batch_size: int):
    dataset, groups = _grouped(count=count, per_image=3)
    whole = list(make_loader(groups, batch_size, shuffle=True, seed=2, epoch=1, world_size=2))
    ranks = [list(make_loader(groups, batch_size, shuffle=True, seed=2, epoch=1, rank=r, world_size=2)) for r in (0, 1)]
    # 9 images in batches of 4 leave a last batch of 1, too small for 2 processes: dropped.
    assert len(whole) == len(ranks[0]) == len(ranks[1]) == batch_count(count, batch_size, world_size=2)
    assert batch_count(9, 4, world_size=2) == 2 and batch_count(11, 4, world_size=2) == 3
    single = list(make_loader(groups, batch_size, shuffle=True, seed=2, epoch=1))
    for step, (first, second) in enumerate(zip(*ranks, strict=True)):
        images = single[step].inputs[:, 0, 0].long().tolist()
        assert first.inputs[:, 0, 0].long().tolist() == images[0::2]
        assert second.inputs[:, 0, 0].long().tolist() == images[1::2]
        whole_captions = _image_captions(dataset, single[step])
        for piece in (first, second):
            assert piece.captions_per_input == 3 and len(piece) == 3 * len(piece.inputs)
            mine = _image_captions(dataset, piece)
            assert mine == {image: whole_captions[image] for image in mine}


def _image_captions(dataset: CaptionTrainingSet, batch: CaptionBatch) -> dict[int, list[str]]:
    words = _batch_captions(dataset, batch)
    per = batch.captions_per_input
    return {int(image): words[per * row : per * row + per] for row, image in enumerate(batch.inputs[:, 0, 0].tolist())}


def test_grouped_skip_batches_resumes_the_same_batches():
    _, groups = _grouped(count=23, per_image=3)
    whole = list(make_loader(groups, 4, shuffle=True, seed=7, epoch=2))
    resumed = list(make_loader(groups, 4, shuffle=True, seed=7, epoch=2, skip_batches=3))
    assert len(whole) == batch_count(23, 4) == 6 and len(resumed) == 3
    for a, b in zip(whole[3:], resumed, strict=True):
        assert torch.equal(a.inputs, b.inputs) and torch.equal(a.captions, b.captions)
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.record_indices, b.record_indices)


def test_batch_count_matches_the_ungrouped_loader_too():
    records = _records(10)
    dataset = CaptionTrainingSet(records, _vocabulary(records), _input, captions_per_image=3, seed=0)
    for batch_size, world_size in ((7, 1), (7, 2), (4, 3), (5, 2), (30, 1)):
        loader = make_loader(dataset, batch_size, shuffle=True, seed=0, world_size=world_size)
        assert len(list(loader)) == batch_count(len(dataset), batch_size, world_size)


def test_collate_caption_groups_keeps_the_order_and_one_input_row_per_image():
    def caption(words: int) -> torch.Tensor:
        return torch.tensor([Vocabulary.start_id] + [5] * words + [Vocabulary.end_id])

    items = [
        GroupedItem(torch.full((2, 3), 7.0), [caption(1), caption(3)], 7),
        GroupedItem(torch.full((2, 3), 4.0), [caption(4), caption(2)], 4),
    ]
    batch = collate_caption_groups(items)
    assert batch.inputs[:, 0, 0].tolist() == [7.0, 4.0] and batch.captions_per_input == 2
    assert batch.lengths.tolist() == [3, 5, 6, 4] and batch.record_indices.tolist() == [7, 7, 4, 4]
    assert batch.captions.shape == (4, 6) and len(batch) == 4
    assert [int((row != Vocabulary.pad_id).sum()) for row in batch.captions] == [3, 5, 6, 4]
    second = batch.input_rows(1, 2)
    assert second.inputs[:, 0, 0].tolist() == [4.0] and second.record_indices.tolist() == [4, 4]
    assert second.lengths.tolist() == [6, 4] and second.captions_per_input == 2
    moved = batch.to("cpu")
    assert moved.captions_per_input == 2 and len(moved) == 4
    with pytest.raises(ValueError, match="same number of captions"):
        collate_caption_groups([items[0], GroupedItem(items[1].inputs, [caption(2)], 4)])
