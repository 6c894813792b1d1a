"""``data.group_captions``: an image's captions of the epoch in one batch, its input stored once.

Teacher forcing on a grouped batch must compute what it computes on the same captions with the
image's grid repeated for each caption (the ungrouped layout); accumulation cuts between images;
a grouped run trains, saves and resumes mid-epoch bit for bit.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from captioner.data.batches import (
    CaptionBatch,
    CaptionTrainingSet,
    ImageCaptionGroups,
    collate_captions,
    make_loader,
)
from captioner.data.records import CaptionRecord
from captioner.data.text import Vocabulary, tokenize_caption
from captioner.errors import ConfigError
from captioner.training.config import RunConfig
from captioner.training.distributed import DistributedContext
from captioner.training.evaluation import search_tokens
from captioner.training.inputs import InputKind
from captioner.training.loop import TeacherForcing, TrainStep, _split, build_model, caption_loss

PER_IMAGE = 3
WORDS = ("red", "blue", "square", "circle", "left", "of", "a", "the", "small", "big")


def _records(count: int = 8) -> list[CaptionRecord]:
    generator = torch.Generator().manual_seed(0)
    records = []
    for index in range(count):
        captions = []
        for _ in range(4):
            length = int(torch.randint(2, 8, (), generator=generator))
            captions.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (length,), generator=generator)))
        records.append(CaptionRecord(f"img{index}.png", tuple(captions), "train", index))
    return records


def _config(**optim: object) -> RunConfig:
    return RunConfig.from_dict({
        "encoder": {"name": "small_cnn", "pretrained": False, "image_size": 64},
        "decoder": {"embed_dim": 8, "hidden_dim": 12, "attention_dim": 6, "dropout": 0.0},
        "data": {"captions_per_image": PER_IMAGE, "group_captions": True},
        "optim": {"attention_regularization": 1.0, "grad_clip": 1e9, **optim},
        "device": "cpu",
    })


class _Grids:
    """A different random (regions, features) grid per record, as a feature cache would give."""

    def __init__(self, count: int, feature_dim: int) -> None:
        self.grids = torch.randn(count, 5, feature_dim, generator=torch.Generator().manual_seed(1))

    def __call__(self, record: CaptionRecord, index: int) -> torch.Tensor:
        return self.grids[index]


def _setup(count: int = 8):
    records = _records(count)
    vocabulary = Vocabulary.build((tokenize_caption(c) for r in records for c in r.captions), min_count=1)
    config = _config()
    torch.manual_seed(0)
    model = build_model(config, vocabulary)
    dataset = CaptionTrainingSet(
        records, vocabulary, _Grids(count, model.encoder.feature_dim), captions_per_image=PER_IMAGE, seed=3
    )
    return records, vocabulary, config, model, dataset


def _grouped_and_ungrouped(dataset: CaptionTrainingSet, images: int) -> tuple[CaptionBatch, CaptionBatch]:
    """The first grouped batch of epoch 1, and the same captions as the ungrouped set serves
    them (a row of inputs per caption, sorted by length by ``collate_captions``)."""
    grouped = next(iter(make_loader(ImageCaptionGroups(dataset), images, shuffle=True, seed=0, epoch=1)))
    slots = grouped.record_indices[::PER_IMAGE].tolist()  # every record is served: slot == record index
    items = [dataset[slot + draw * dataset.image_count] for slot in slots for draw in range(PER_IMAGE)]
    return grouped, collate_captions(items)


def _loss_and_gradients(model, vocabulary: Vocabulary, config: RunConfig, batch: CaptionBatch, sampling: float = 0.0):
    model.zero_grad(set_to_none=True)
    forcing = TeacherForcing(model, InputKind.REGIONS, vocabulary.pad_id)
    forcing.sampling_probability = sampling
    torch.manual_seed(5)  # scheduled sampling's draws
    out = forcing(batch.inputs, batch.captions)
    total, _ = caption_loss(out, batch.captions, vocabulary.pad_id, config)
    total.backward()
    gradients = {name: p.grad.clone() for name, p in model.decoder.named_parameters() if p.grad is not None}
    return total.detach(), gradients


def test_grouped_teacher_forcing_equals_the_grid_repeated_per_caption() -> None:
    _, vocabulary, config, model, dataset = _setup()
    grouped, ungrouped = _grouped_and_ungrouped(dataset, images=4)
    assert grouped.inputs.shape[0] == 4 and ungrouped.inputs.shape[0] == len(grouped) == 4 * PER_IMAGE
    assert sorted(ungrouped.lengths.tolist()) == sorted(grouped.lengths.tolist())
    loss, gradients = _loss_and_gradients(model, vocabulary, config, grouped)
    expected_loss, expected_gradients = _loss_and_gradients(model, vocabulary, config, ungrouped)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert gradients.keys() == expected_gradients.keys() and len(gradients) > 5
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)
    # The comparison can fail: the same captions on other images' grids score otherwise.
    swapped = CaptionBatch(grouped.inputs.flip(0), grouped.captions, grouped.lengths, grouped.record_indices, PER_IMAGE)
    other_loss, _ = _loss_and_gradients(model, vocabulary, config, swapped)
    assert not torch.allclose(other_loss, expected_loss, rtol=1e-4, atol=0.0)


def test_grouped_scheduled_sampling_equals_the_grid_repeated_per_caption() -> None:
    _, vocabulary, config, model, dataset = _setup()
    grouped, _ = _grouped_and_ungrouped(dataset, images=4)
    # Scheduled sampling draws a word per row, so the rows must be in the same order.
    repeated = CaptionBatch(
        grouped.inputs.repeat_interleave(PER_IMAGE, dim=0), grouped.captions, grouped.lengths, grouped.record_indices
    )
    loss, gradients = _loss_and_gradients(model, vocabulary, config, grouped, sampling=0.5)
    expected_loss, expected_gradients = _loss_and_gradients(model, vocabulary, config, repeated, sampling=0.5)
    forced_loss, _ = _loss_and_gradients(model, vocabulary, config, repeated)
    assert not torch.allclose(expected_loss, forced_loss)  # it did sample
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    for name, gradient in expected_gradients.items():
        torch.testing.assert_close(gradients[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_accumulation_cuts_a_grouped_batch_between_images() -> None:
    *_, dataset = _setup()
    grouped, _ = _grouped_and_ungrouped(dataset, images=4)
    for parts, images in ((2, [2, 2]), (3, [1, 2, 1]), (8, [1, 1, 1, 1])):
        pieces = _split(grouped, parts)
        assert [len(piece.inputs) for piece in pieces] == images
        assert all(len(piece) == PER_IMAGE * len(piece.inputs) and piece.captions_per_input == PER_IMAGE for piece in pieces)
        assert torch.equal(torch.cat([piece.captions for piece in pieces]), grouped.captions)
        assert torch.equal(torch.cat([piece.inputs for piece in pieces]), grouped.inputs)
        assert torch.cat([p.record_indices for p in pieces]).tolist() == grouped.record_indices.tolist()
    # An ungrouped batch is cut by caption rows, as before.
    ungrouped = CaptionBatch(grouped.inputs.repeat_interleave(PER_IMAGE, 0), grouped.captions, grouped.lengths,
                             grouped.record_indices)
    assert [len(piece) for piece in _split(ungrouped, 5)] == [2, 3, 2, 3, 2]


def test_train_step_on_a_grouped_batch_equals_the_ungrouped_one_with_and_without_accumulation() -> None:
    records, vocabulary, _, model, dataset = _setup()
    grouped, ungrouped = _grouped_and_ungrouped(dataset, images=4)
    outcomes, gradients = [], []
    for batch, accumulation in ((ungrouped, 1), (grouped, 1), (grouped, 2), (grouped, 4)):
        config = _config(accumulation_steps=accumulation)
        copied = copy.deepcopy(model)
        optimizer = torch.optim.Adam(copied.decoder.parameters(), lr=1e-3)
        step = TrainStep(copied, optimizer, config, vocabulary, InputKind.REGIONS, torch.device("cpu"),
                         DistributedContext(), None, search_tokens(vocabulary), records, None, None)
        outcomes.append(step(batch))
        gradients.append({name: p.grad.clone() for name, p in copied.decoder.named_parameters() if p.grad is not None})
    words = int((ungrouped.captions[:, 1:] != vocabulary.pad_id).sum())
    for outcome, grads in zip(outcomes[1:], gradients[1:], strict=True):
        assert outcome[1] == outcomes[0][1] == words
        assert outcome[0] == pytest.approx(outcomes[0][0], rel=1e-5)
        for name, gradient in gradients[0].items():
            torch.testing.assert_close(grads[name], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_group_captions_is_refused_for_self_critical_training() -> None:
    with pytest.raises(ConfigError, match="data.group_captions applies to cross-entropy training"):
        RunConfig.from_dict({"data": {"group_captions": True}, "optim": {"objective": "self_critical"}})
    assert RunConfig.from_dict({"data": {"group_captions": True}}).data.group_captions
    assert not RunConfig().data.group_captions


def _tiny_config(data: Path, **optim: object) -> RunConfig:
    values = json.loads((Path(__file__).parents[2] / "src/captioner/recipes/scenes_small_cnn.json").read_text())
    values["data"].update(path=str(data), captions_per_image=2, group_captions=True)
    values["decoder"].update(embed_dim=16, hidden_dim=32, attention_dim=16)
    values["optim"].update({"epochs": 2, "batch_size": 32, "warmup_steps": 2, "save_every_steps": 4, **optim})
    values["eval"]["max_images"] = 8
    values["threads"] = 1
    return RunConfig.from_dict(values)


def _trainer_step(run_dir: Path) -> int:
    with safe_open(str(run_dir / "last" / "training_state.safetensors"), framework="pt") as handle:
        return json.loads(handle.metadata()["trainer"])["step"]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(run_dir / "last" / "training_state.safetensors"), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys() if k.startswith("model.")}


class _Crash(RuntimeError):
    pass


@pytest.mark.slow
def test_grouped_training_with_accumulation_trains_saves_and_resumes_bit_identical(
    tiny_scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from captioner.training import loop

    config = _tiny_config(tiny_scenes, accumulation_steps=2)
    with caplog.at_level("INFO"):
        result = loop.train(config, tmp_path / "straight", progress=False)
    assert result.epochs_run == 2 and (tmp_path / "straight" / "model.safetensors").is_file()
    # 240 images, 32 // 2 = 16 images (32 captions) per batch: 15 steps an epoch, not 240 * 2 / 32.
    assert "480 examples/epoch, 15 steps/epoch, 16 images with all their captions per batch" in caplog.text
    assert _trainer_step(tmp_path / "straight") == 30
    history = [json.loads(line) for line in (tmp_path / "straight" / "history.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[1]["train_loss"] < history[0]["train_loss"]

    # Crash during step 7 of epoch 1 (two losses a step): the state saved after step 4 is kept.
    real, calls = loop.caption_loss, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 13:
            raise _Crash("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "caption_loss", crashing)
    with pytest.raises(_Crash):
        loop.train(config, tmp_path / "crashed", progress=False)
    monkeypatch.setattr(loop, "caption_loss", real)
    assert _trainer_step(tmp_path / "crashed") == 4
    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = loop.train(config, tmp_path / "crashed", resume=True, progress=False)
    assert "resuming after epoch 0, batch 4" in caplog.text
    assert resumed.epochs_run == 2 and _trainer_step(tmp_path / "crashed") == 30
    ours, theirs = _weights(tmp_path / "crashed"), _weights(tmp_path / "straight")
    assert ours.keys() == theirs.keys()
    different = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[0]}"
