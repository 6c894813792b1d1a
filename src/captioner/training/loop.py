"""The training loop: teacher forcing with masked cross-entropy, validated by CIDEr-D.

Read it top to bottom: build the data, the model and the optimiser; then for every epoch run
the batches (loss = cross-entropy of the next word + the doubly stochastic attention penalty),
caption the validation split, keep the best weights, stop early when validation stops improving.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import random
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from captioner.data.batches import (
    CaptionBatch,
    CaptionTrainingSet,
    ImageCaptionGroups,
    ImageSet,
    batch_count,
    collate_caption_groups,
    collate_captions,
    collate_images,
    encode_captions,
    make_loader,
)
from captioner.data.readers import load_records
from captioner.data.records import CaptionRecord
from captioner.data.text import Vocabulary, tokenize_caption
from captioner.encoders.base import Encoder
from captioner.encoders.cache import INDEX_FILE, PROGRESS_FILE, FeatureCache, build_feature_cache
from captioner.encoders.registry import build_encoder
from captioner.errors import CaptionerError, CheckpointError, ConfigError
from captioner.metrics.cider_reward import CiderDReward
from captioner.models.attention import coverage_penalty, rows_per_image
from captioner.models.captioning import CaptioningModel, native_bfloat16
from captioner.models.decoder import ShowAttendTellDecoder, TeacherForcedOutput
from captioner.training import checkpoint
from captioner.training.averaging import WeightAverage
from captioner.training.config import RunConfig
from captioner.training.evaluation import caption_records, run_decode_settings, score_predictions, search_tokens
from captioner.training.inputs import (
    CachedInput,
    InputKind,
    MirroredInput,
    PixelInput,
    mirrorable_images,
    records_in_cache,
    regions_from_inputs,
)
from captioner.training.distributed import DistributedContext, init_distributed, shutdown_distributed
from captioner.training.self_critical import reward_references, self_critical_loss

OBJECTIVES = ("cross_entropy", "self_critical")

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def learning_rate_at(step: int, total_steps: int, steps_per_epoch: int, config: RunConfig) -> float:
    """Linear warm-up, then the configured decay; returns the multiplier of the base rate."""
    optim = config.optim
    if step < optim.warmup_steps:
        return (step + 1) / optim.warmup_steps
    if optim.lr_schedule == "constant":
        return 1.0
    if optim.lr_schedule == "step":
        return 0.8 ** (step // (optim.step_epochs * steps_per_epoch))
    if optim.lr_schedule == "cosine":
        progress = min(1.0, (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps))
        floor = optim.min_lr_ratio
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ConfigError(f"optim.lr_schedule must be cosine, step or constant, not {optim.lr_schedule!r}")


def build_model(
    config: RunConfig, vocabulary: Vocabulary, pretrained_encoder: bool = True, encoder: Encoder | None = None
) -> CaptioningModel:
    """The model a config describes. ``pretrained_encoder=False`` skips loading encoder weights
    because a checkpoint's weights will overwrite them."""
    if encoder is None:
        encoder_config = config.encoder
        if not pretrained_encoder:
            encoder_config = dataclasses.replace(encoder_config, pretrained=False)
        encoder = build_encoder(encoder_config)
    decoder = ShowAttendTellDecoder(config.decoder, len(vocabulary), encoder.feature_dim)
    return CaptioningModel(encoder, decoder)


def restore_model(loaded: checkpoint.LoadedRun, encoder: Encoder | None = None) -> CaptioningModel:
    """Rebuild a run's model and load its weights, strictly.

    A run directory without encoder weights (a shipped model with a frozen pretrained encoder)
    takes the encoder from its pretrained source, or ``encoder`` when one built from the same
    settings is at hand (an ensemble's members share it), and loads only the decoder.
    """
    source = loaded.run_dir / checkpoint.WEIGHTS_FILE
    if checkpoint.has_encoder_weights(loaded.weights):
        model = build_model(loaded.config, loaded.vocabulary, pretrained_encoder=False)
        checkpoint.load_state_strict(model, loaded.weights, source)
    else:
        model = build_model(loaded.config, loaded.vocabulary, pretrained_encoder=True, encoder=encoder)
        checkpoint.load_state_strict(model.decoder, checkpoint.decoder_weights(loaded.weights), source)
    return model


def load_initial_weights(model: CaptioningModel, config: RunConfig) -> checkpoint.LoadedRun:
    """Start from ``config.init_from``'s weights (its best or its last, ``config.init_weights``);
    its encoder settings must be this run's."""
    loaded = checkpoint.load_run(config.init_from)
    for name in ("name", "layer", "image_size"):
        if getattr(loaded.config.encoder, name) != getattr(config.encoder, name):
            raise ConfigError(
                f"init_from {config.init_from} was trained with encoder {name}="
                f"{getattr(loaded.config.encoder, name)!r} but this run asks for "
                f"{getattr(config.encoder, name)!r}"
            )
    differing = [
        f"decoder.{field.name}={getattr(loaded.config.decoder, field.name)!r}"
        for field in dataclasses.fields(loaded.config.decoder)
        if field.name != "dropout" and getattr(loaded.config.decoder, field.name) != getattr(config.decoder, field.name)
    ]
    if differing:
        # The weights would not fit; say which settings to copy instead of listing tensor shapes.
        raise ConfigError(
            f"init_from {config.init_from} has a decoder of other sizes: set {', '.join(differing)} "
            "for this run too (--set or the recipe's \"set\")"
        )
    if config.init_weights == "last":
        weights = checkpoint.load_last_weights(loaded.run_dir)
        source = checkpoint.training_state_path(loaded.run_dir)
    else:
        weights = loaded.weights
        source = loaded.run_dir / checkpoint.WEIGHTS_FILE
    if checkpoint.has_encoder_weights(weights):
        checkpoint.load_state_strict(model, weights, source)
    else:
        checkpoint.load_state_strict(model.decoder, checkpoint.decoder_weights(weights), source)
    return loaded


@dataclass
class TrainingData:
    train_records: list[CaptionRecord]
    val_records: list[CaptionRecord]
    vocabulary: Vocabulary
    train_input: PixelInput | CachedInput | MirroredInput
    val_input: PixelInput | CachedInput
    input_kind: InputKind


def prepare_data(config: RunConfig, model_preprocess, vocabulary: Vocabulary | None) -> TrainingData:
    data = config.data
    train_records = load_records(data.path, split=data.train_split, fmt=data.format)
    val_records = load_records(data.path, split=data.val_split, fmt=data.format)
    if config.eval.max_images:
        val_records = val_records[: config.eval.max_images]
    if vocabulary is None:
        vocabulary = Vocabulary.build(
            (tokenize_caption(c) for r in train_records for c in r.captions), min_count=data.min_word_count
        )
    if data.feature_cache:
        cache = FeatureCache.open(data.feature_cache)
        check_cache_matches(cache, config)
        kind = InputKind.TRUNK if cache.trunk_only else InputKind.REGIONS
        train_input = val_input = CachedInput(cache)
        missing = len(train_records) + len(val_records)
        train_records = records_in_cache(train_records, cache)
        val_records = records_in_cache(val_records, cache)
        missing -= len(train_records) + len(val_records)
        if missing:
            log.warning("%d images are not in the feature cache %s (unreadable); training without them", missing, data.feature_cache)
        if data.mirror_feature_cache:
            train_input = mirrored_input(config, cache, train_records)
    elif data.mirror_feature_cache:
        raise ConfigError("data.mirror_feature_cache needs data.feature_cache (the plain photos' features) too")
    else:
        kind = InputKind.PIXELS
        train_input = val_input = PixelInput(model_preprocess)
    if not train_records:
        raise ConfigError(f"no training images in {data.path} (split {data.train_split!r})")
    return TrainingData(train_records, val_records, vocabulary, train_input, val_input, kind)


def ensure_feature_caches(
    config: RunConfig, encoder: Encoder, device: torch.device, distributed: bool, progress: bool
) -> None:
    """Encode the run's photos into ``data.feature_cache`` (and ``data.mirror_feature_cache``)
    where no cache is there yet, as ``captioner features`` would, so that a recipe reading cached
    features is one command. An interrupted cache resumes; a finished one is left for
    ``prepare_data`` to check against the run's encoder. A folder that exists and holds something
    else is not written into."""
    data = config.data
    for path, mirrored in ((data.feature_cache, False), (data.mirror_feature_cache, True)):
        if not path:
            continue
        folder = Path(path)
        unfinished = (folder / PROGRESS_FILE).exists()
        if (folder / INDEX_FILE).exists() or (folder.exists() and any(folder.iterdir()) and not unfinished):
            continue
        if distributed:
            # The other processes would wait on a collective for as long as the encoding takes,
            # past the process group's timeout.
            raise ConfigError(
                f"feature cache {path} does not exist yet; build it once with `captioner features "
                f"--data {data.path} --out {path}{' --mirror' if mirrored else ''}` before starting several processes"
            )
        records = [
            record
            for split in dict.fromkeys((data.train_split, data.val_split))
            for record in load_records(data.path, split=split, fmt=data.format)
        ]
        log.info("%s feature cache %s: encoding the %s and %s photos into it first",
                 "finishing the" if unfinished else "no", path, data.train_split, data.val_split)
        # The run then trains exactly as from a cache built beforehand: the model and the data order
        # are seeded after this (tests/training/test_pipeline.py).
        report = build_feature_cache(
            records, encoder, folder, num_workers=data.num_workers, device=device,
            trunk_only=config.encoder.fine_tune_blocks > 0, progress=progress, mirrored=mirrored,
        )  # fmt: skip
        log.info("%s", report.summary())


def mirrored_input(config: RunConfig, plain: FeatureCache, train_records: list[CaptionRecord]) -> MirroredInput:
    path = config.data.mirror_feature_cache
    mirrored = FeatureCache.open(path)
    check_cache_matches(mirrored, config, path)
    if not mirrored.mirrored or plain.mirrored:
        raise ConfigError(
            f"data.mirror_feature_cache {path} must hold mirrored photos (`captioner features --mirror`) "
            f"and data.feature_cache {config.data.feature_cache} the photos as they are"
        )
    mirrorable = mirrorable_images(train_records, mirrored)
    log.info("%d of %d training images may be read mirrored (p=%.2f); the rest mention left or right or "
             "are not in %s", len(mirrorable), len(train_records), config.data.mirror_probability, path)
    return MirroredInput(plain, mirrored, mirrorable, config.data.mirror_probability)


def check_cache_matches(cache: FeatureCache, config: RunConfig, path: str | None = None) -> None:
    path = path or config.data.feature_cache
    cached, wanted = cache.encoder_config, config.encoder
    # pretrained/weights_path too: a run saves its encoder beside the decoder, and a decoder trained
    # on pretrained features next to a randomly initialised encoder would caption nonsense.
    for name in ("name", "layer", "image_size", "pretrained", "weights_path"):
        if getattr(cached, name) != getattr(wanted, name):
            raise ConfigError(
                f"feature cache {path} was made with encoder {name}="
                f"{getattr(cached, name)!r} but the run asks for {getattr(wanted, name)!r}; "
                "rebuild it with `captioner features` or change the encoder settings"
            )
    if cache.trunk_only != (config.encoder.fine_tune_blocks > 0):
        raise ConfigError(
            f"feature cache {path} holds "
            f"{'trunk activations' if cache.trunk_only else 'final features'}, which fits "
            f"{'' if cache.trunk_only else 'no '}encoder fine-tuning; set encoder.fine_tune_blocks "
            "accordingly or rebuild the cache"
        )
    if cache.trunk_only and config.encoder.fine_tune_blocks != cache.encoder_config.fine_tune_blocks:
        raise ConfigError(
            f"feature cache {path} holds trunk activations for "
            f"fine_tune_blocks={cache.encoder_config.fine_tune_blocks}, the run asks for "
            f"{config.encoder.fine_tune_blocks}"
        )


def make_optimizer(model: CaptioningModel, config: RunConfig) -> torch.optim.Optimizer:
    groups = [{"params": list(model.decoder.parameters()), "lr": config.optim.learning_rate}]
    encoder_params = [p for p in model.encoder.parameters() if p.requires_grad]
    if encoder_params:
        fine_tuning = config.encoder.fine_tune_blocks > 0 and config.encoder.pretrained
        lr = config.encoder.fine_tune_lr if fine_tuning else config.optim.learning_rate
        groups.append({"params": encoder_params, "lr": lr})
    for group in groups:
        group["initial_lr"] = group["lr"]
    return torch.optim.Adam(groups, weight_decay=config.optim.weight_decay)


class TeacherForcing(nn.Module):
    """Inputs of any kind and captions -> the decoder's teacher-forced output: the whole trained
    computation in one ``forward``, which is what DistributedDataParallel wraps."""

    def __init__(self, model: CaptioningModel, input_kind: InputKind, pad_id: int) -> None:
        super().__init__()
        self.model = model
        self.input_kind = input_kind
        self.pad_id = pad_id
        self.sampling_probability = 0.0
        """Scheduled sampling's probability for the current epoch (set by the loop)."""

    def forward(self, inputs: torch.Tensor, captions: torch.Tensor) -> TeacherForcedOutput:
        """``inputs`` has a row per caption, or one per image shared by its consecutive captions
        (``data.group_captions``): the encoder, where it runs, and the decoder's projection of
        the regions then run once per image."""
        regions = regions_from_inputs(self.model, inputs, self.input_kind)
        if self.sampling_probability > 0.0 and regions.size(0) != captions.size(0):
            # Scheduled sampling steps the decoder word by word with a row of regions per caption.
            regions = regions.repeat_interleave(rows_per_image(captions.size(0), regions.size(0)), dim=0)
        # Padding follows <end>, so a caption's length is its count of other tokens.
        lengths = (captions[:, 1:] != self.pad_id).sum(dim=1)
        return self.model.decoder(regions, captions, sampling_probability=self.sampling_probability, lengths=lengths)


def scheduled_sampling_probability(epoch: int, config: RunConfig) -> float:
    """The chance of feeding the decoder its own word in ``epoch`` (1-based)."""
    optim = config.optim
    if optim.scheduled_sampling_max <= 0.0 or epoch < optim.scheduled_sampling_start_epoch:
        return 0.0
    grown = optim.scheduled_sampling_increase * (epoch - optim.scheduled_sampling_start_epoch + 1)
    return min(optim.scheduled_sampling_max, grown)


def caption_loss(
    out: TeacherForcedOutput,
    captions: torch.Tensor,
    pad_id: int,
    config: RunConfig,
    word_total: float | None = None,
    image_total: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked next-word cross-entropy plus the attention penalty; returns (total, cross-entropy).

    The cross-entropy is summed over words and divided by ``word_total``, the penalty summed over
    captions and divided by ``image_total`` (default: this batch's counts). Passing the counts of
    the whole global batch makes the losses of its pieces (accumulation steps, processes) add up
    to the loss of the batch in one piece.
    """
    targets = captions[:, 1:][out.rows, out.steps]
    words_only = targets != pad_id  # positions computed past <end> (no lengths given) are padding
    logits, alphas, rows = out.word_logits, out.word_alphas, out.rows
    if not bool(words_only.all()):
        logits, alphas, rows, targets = logits[words_only], alphas[words_only], rows[words_only], targets[words_only]
    word_sum = F.cross_entropy(
        logits.float(), targets, label_smoothing=config.optim.label_smoothing, reduction="sum"
    )
    attention_per_region = alphas.new_zeros(captions.size(0), alphas.size(1), dtype=torch.float32)
    penalty_sum = coverage_penalty(attention_per_region.index_add(0, rows, alphas.float())) * captions.size(0)
    words = torch.tensor(targets.numel(), device=targets.device).clamp(min=1)
    total = word_sum / (word_total or words) + config.optim.attention_regularization * penalty_sum / (
        image_total or captions.size(0)
    )
    return total, (word_sum / words).detach()


class TrainingDiverged(CaptionerError):
    """The loss or gradient stayed non-finite for ``optim.max_bad_steps`` steps in a row."""


class StopRequest:
    """Ctrl-C during training asks for a clean stop: the loop finishes its step, saves the resume
    state and exits. A second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False

    @contextlib.contextmanager
    def on_interrupt(self) -> Iterator[None]:
        def request(signum: int, frame: object) -> None:
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            log.warning("stopping after this step (Ctrl-C again to stop now)")

        try:
            previous = signal.signal(signal.SIGINT, request)
        except ValueError:  # not the main thread: leave Ctrl-C to the caller
            yield
            return
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def _split(batch, parts: int) -> list:
    """A batch cut into up to ``parts`` consecutive pieces (gradient accumulation), by rows of
    its inputs: a grouped ``CaptionBatch`` (``data.group_captions``) is cut between images, each
    piece with all the captions of its images."""
    size = len(batch.inputs)
    bounds = [round(size * i / parts) for i in range(parts + 1)]
    if isinstance(batch, CaptionBatch):
        return [batch.input_rows(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
    return [
        type(batch)(**{f.name: getattr(batch, f.name)[a:b] for f in dataclasses.fields(batch)})
        for a, b in zip(bounds, bounds[1:])
        if b > a
    ]


class TrainStep:
    """One optimiser step on one global batch: split into accumulation pieces, losses normalised
    by the global batch's counts, gradients reduced across processes, clipped, applied.

    Returns ``(sum of the tracked value, its count)`` over the global batch (cross-entropy summed
    over words and the number of words; or reward summed over images and images), or ``None``
    when the loss or the gradient was not finite on any process (the update is skipped).
    """

    def __init__(
        self,
        model: CaptioningModel,
        optimizer: torch.optim.Optimizer,
        config: RunConfig,
        vocabulary: Vocabulary,
        input_kind: InputKind,
        device: torch.device,
        context: DistributedContext,
        reward: CiderDReward | None,
        tokens,
        records: Sequence[CaptionRecord],
        autocast_dtype: torch.dtype | None,
        scaler,
    ) -> None:
        self.model, self.optimizer, self.config = model, optimizer, config
        self.vocabulary, self.input_kind, self.device, self.context = vocabulary, input_kind, device, context
        self.reward, self.tokens, self.records = reward, tokens, records
        self.autocast_dtype, self.scaler = autocast_dtype, scaler
        self.parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.forcing = TeacherForcing(model, input_kind, vocabulary.pad_id)
        self.epoch = 1
        """The epoch being trained (set by the loop): picks each image's forced reference."""
        self.references: dict[int, list[torch.Tensor]] | None = None
        if reward is not None and config.scst.cross_entropy_weight > 0:
            self.references = {
                index: encode_captions(record.captions, vocabulary, config.data.max_caption_words)
                for index, record in enumerate(records)
            }
        self.teacher_forcing: torch.nn.Module = self.forcing
        if config.compile:
            self.teacher_forcing = torch.compile(self.teacher_forcing)
        self.ddp = None
        if context.enabled and reward is None:
            # Self-critical steps drive the decoder through step(), not forward(), so DDP's hooks
            # would not see them; their gradients are averaged by hand below instead.
            from torch.nn.parallel import DistributedDataParallel

            self.ddp = DistributedDataParallel(
                self.teacher_forcing, device_ids=[device.index] if device.type == "cuda" else None
            )
            self.teacher_forcing = self.ddp

    def forced_loss(self, piece) -> torch.Tensor:
        """Teacher-forced loss of the mixed self-critical objective: each image of ``piece`` on
        its reference number ``epoch + index`` (cycling), so every reference takes its turn and a
        resumed run forces the same ones."""
        rows, chosen = [], []
        for row, index in enumerate(piece.record_indices.tolist()):
            references = self.references[index]
            if references:  # an image whose captions all tokenize to nothing is not forced
                rows.append(row)
                chosen.append(references[(self.epoch + index) % len(references)])
        if not chosen:
            return torch.zeros((), device=self.device)
        captions = torch.full((len(chosen), max(len(c) for c in chosen)), self.vocabulary.pad_id, dtype=torch.long)
        for row, caption in enumerate(chosen):
            captions[row, : len(caption)] = caption
        captions = captions.to(self.device)
        inputs = piece.inputs if len(rows) == len(piece) else piece.inputs[torch.tensor(rows, device=piece.inputs.device)]
        out = self.teacher_forcing(inputs, captions)
        loss, _ = caption_loss(out, captions, self.vocabulary.pad_id, self.config)
        return loss

    def __call__(self, batch) -> tuple[float, int] | None:
        config, context = self.config, self.context
        batch = batch.to(self.device)
        pieces = _split(batch, config.optim.accumulation_steps)
        image_total = context.all_reduce_sum(float(len(batch)))
        word_total = None
        if self.reward is None:
            word_total = context.all_reduce_sum(float((batch.captions[:, 1:] != self.vocabulary.pad_id).sum()))
        # DDP averages gradients over processes; scaling by their number turns that into a sum.
        scale = float(context.world_size)
        self.optimizer.zero_grad(set_to_none=True)
        tracked_sum = 0.0
        for index, piece in enumerate(pieces):
            last = index == len(pieces) - 1
            sync = contextlib.nullcontext() if self.ddp is None or last else self.ddp.no_sync()
            with sync:
                with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
                    if self.reward is not None:
                        regions = regions_from_inputs(self.model, piece.inputs, self.input_kind)
                        scst = config.scst
                        keys = [self.records[i].image_id for i in piece.record_indices.tolist()]
                        self.model.decoder.train(scst.dropout)
                        outcome = self_critical_loss(
                            self.model.decoder, regions.float(), keys, self.reward, self.vocabulary, self.tokens,
                            samples=scst.samples, baseline=scst.baseline, max_length=scst.max_words,
                            temperature=scst.temperature, end_token=scst.reward_end_token,
                        )
                        self.model.decoder.train()
                        loss = outcome.loss
                        if self.references is not None:
                            loss = loss + config.scst.cross_entropy_weight * self.forced_loss(piece)
                        loss = loss * (len(piece) / image_total)
                        tracked = outcome.mean_reward * len(piece)
                    else:
                        out = self.teacher_forcing(piece.inputs, piece.captions)
                        loss, cross_entropy = caption_loss(
                            out, piece.captions, self.vocabulary.pad_id, config,
                            word_total=word_total, image_total=image_total,
                        )
                        # Weighted by words, so the logged loss is per word of the global batch.
                        tracked = float(cross_entropy) * float((piece.captions[:, 1:] != self.vocabulary.pad_id).sum())
                loss = loss * scale
                if context.all_reduce_sum(0.0 if bool(torch.isfinite(loss)) else 1.0) > 0:
                    self.optimizer.zero_grad(set_to_none=True)
                    return None
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                else:
                    loss.backward()
            tracked_sum += tracked
        if context.enabled and self.ddp is None:
            for parameter in self.parameters:
                if parameter.grad is not None:
                    torch.distributed.all_reduce(parameter.grad)
                    parameter.grad /= context.world_size
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, config.optim.grad_clip)
        if not bool(torch.isfinite(norm)):
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
            return None
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        # Every process reports the whole global batch, so logs do not depend on the process count.
        return context.all_reduce_sum(tracked_sum), int(word_total if word_total is not None else image_total)


def _summary_writer(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

    return SummaryWriter(str(run_dir / "tensorboard"))


@dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict
    epochs_run: int
    seconds: float


def train(config: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> TrainResult:
    run_dir = Path(run_dir)
    started = time.time()
    seed_everything(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    context = init_distributed(config.device)
    device = resolve_device(config.device)
    if context.enabled and device.type == "cuda":
        device = torch.device("cuda", context.local_rank)
    if config.optim.accumulation_steps < 1:
        raise ConfigError(f"optim.accumulation_steps must be at least 1, got {config.optim.accumulation_steps}")

    if config.optim.objective not in OBJECTIVES:
        raise ConfigError(f"optim.objective must be one of {', '.join(OBJECTIVES)}, not {config.optim.objective!r}")
    self_critical = config.optim.objective == "self_critical"
    if self_critical and not config.init_from:
        raise ConfigError(
            "self-critical training fine-tunes a trained model: set init_from to a cross-entropy run directory"
        )
    if resume:
        vocabulary: Vocabulary | None = Vocabulary.load(run_dir / checkpoint.VOCAB_FILE)
    elif config.init_from:
        # The starting weights fix the vocabulary: its rows are the decoder's output layer.
        vocabulary = checkpoint.load_run(config.init_from).vocabulary
    else:
        vocabulary = None
    if resume:
        saved = checkpoint.read_json(run_dir / checkpoint.CONFIG_FILE, "config")
        # Read through RunConfig so that settings added since the file was written compare as
        # their defaults.
        if RunConfig.from_dict(saved, str(run_dir / checkpoint.CONFIG_FILE)).to_dict() != config.to_dict():
            raise CheckpointError(
                f"{run_dir / checkpoint.CONFIG_FILE} differs from this run's settings; "
                "resume with the same settings (or `--config` that file)"
            )
    # The encoder's preprocessing is needed to read the data, and the data's vocabulary to
    # size the decoder: encoder first, then data, then the decoder from a fixed seed.
    encoder = build_encoder(config.encoder)
    ensure_feature_caches(config, encoder, device, context.enabled, progress and context.is_main)
    data = prepare_data(config, encoder.preprocess, vocabulary)
    vocabulary = data.vocabulary
    torch.manual_seed(config.seed)
    model = build_model(config, vocabulary, encoder=encoder)
    if config.init_from and not resume:
        load_initial_weights(model, config)
    model = model.to(device)
    if data.input_kind is not InputKind.PIXELS:
        # Regions come from the cache: an encoder on the GPU would be dead weight in memory.
        model.encoder.requires_grad_(data.input_kind is InputKind.TRUNK and config.encoder.fine_tune_blocks > 0)

    reward: CiderDReward | None = None
    if self_critical:
        # One example per image; its references are the reward's targets.
        dataset = ImageSet(data.train_records, data.train_input)
        collate = collate_images
        reward = CiderDReward({
            r.image_id: reward_references([tokenize_caption(c) for c in r.captions], config.scst.reward_end_token)
            for r in data.train_records
        })
    else:
        dataset = CaptionTrainingSet(
            data.train_records,
            vocabulary,
            data.train_input,
            captions_per_image=config.data.captions_per_image,
            max_length=config.data.max_caption_words,
            seed=config.seed,
        )
        collate = collate_captions
    examples = len(dataset)
    batch_size = config.optim.batch_size
    if config.data.group_captions and not self_critical:
        # Batches of whole images, each with its captions_per_image captions of the epoch.
        dataset = ImageCaptionGroups(dataset)
        collate = collate_caption_groups
        batch_size = max(1, batch_size // config.data.captions_per_image)
        steps_per_epoch = batch_count(len(dataset), batch_size, context.world_size)
    else:
        # (With several processes this counts a last batch the loader drops when it is smaller than
        # the process count; kept so that the learning-rate schedule of existing runs reproduces.)
        steps_per_epoch = math.ceil(len(dataset) / batch_size)
    tokens = search_tokens(vocabulary)
    tracked_name = "reward" if self_critical else "cross_entropy"
    history_key = "train_reward" if self_critical else "train_loss"
    optimizer = make_optimizer(model, config)
    total_steps = steps_per_epoch * config.optim.epochs
    autocast_dtype = None
    scaler = None
    if device.type == "cuda" and config.mixed_precision:
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if autocast_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")
    elif device.type == "cpu" and config.cpu_bf16:
        if native_bfloat16(device):
            autocast_dtype = torch.bfloat16
        else:
            log.warning("cpu_bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); training in fp32")

    state: dict = {
        "epoch": 0, "step": 0, "best_score": -1.0, "best_epoch": 0, "epochs_without_gain": 0,
        # Position inside the epoch being trained, for resuming mid-epoch.
        "batches_done": 0, "running_sum": 0.0, "running_count": 0, "bad_steps": 0,
    }
    average = WeightAverage(model, config.optim.weight_average_decay) if config.optim.weight_average_decay else None
    if resume:
        trainer_state, extra = checkpoint.load_training_state(run_dir, model, optimizer)
        state.update(trainer_state)
        if average is not None:
            average.load_state_dict(extra, checkpoint.training_state_path(run_dir))
        log.info(
            "resuming after epoch %d, batch %d (best %s %.4f)",
            state["epoch"], state["batches_done"], config.eval.metric, state["best_score"],
        )
    elif context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / checkpoint.CONFIG_FILE)
        vocabulary.save(run_dir / checkpoint.VOCAB_FILE)
    writer = _summary_writer(run_dir) if context.is_main else None
    history_path = run_dir / "history.jsonl"
    settings = run_decode_settings(config)
    log.info(
        "training on %d images (%d examples/epoch, %d steps/epoch%s), validating on %d, vocabulary %d words, "
        "device %s%s",
        len(data.train_records), examples, steps_per_epoch,
        f", {batch_size} images with all their captions per batch" if isinstance(dataset, ImageCaptionGroups) else "",
        len(data.val_records), len(vocabulary), device,
        f", {context.world_size} processes" if context.enabled else "",
    )
    if average is not None:
        log.info("validating and saving a moving average of the weights (decay %g)", average.decay)
    step = TrainStep(model, optimizer, config, vocabulary, data.input_kind, device, context, reward, tokens,
                     data.train_records, autocast_dtype, scaler)

    def averaged() -> contextlib.AbstractContextManager:
        """The weights the run validates and saves: the moving average when it keeps one."""
        return average.applied() if average is not None else contextlib.nullcontext()

    def validate() -> tuple[dict[str, float], list[str]]:
        with averaged():
            predictions = caption_records(
                model, data.val_records, data.val_input, data.input_kind, vocabulary, settings, device,
                batch_size=config.eval.batch_size, num_workers=config.data.num_workers,
                progress=progress and context.is_main,
            )
        scores = score_predictions(predictions, meteor=False)
        metrics = {k: v for k, v in scores.corpus.items() if v is not None}
        return metrics, [p.caption for p in predictions]

    def keep_best(epoch: int, metrics: dict[str, float], images: int) -> dict:
        state.update(best_score=metrics[config.eval.metric], best_epoch=epoch, epochs_without_gain=0)
        best = {"split": config.data.val_split, "epoch": epoch, "images": images, "decoding": settings.__dict__, **metrics}
        if context.is_main:
            with averaged():
                checkpoint.save_run(run_dir, config, vocabulary, model, best)
        return best

    def save_state() -> None:
        if context.is_main:
            checkpoint.save_training_state(
                run_dir, model, optimizer, state, average.state_dict() if average is not None else None
            )

    def append_history(entry: dict) -> None:
        if context.is_main:
            with history_path.open("a", encoding="utf-8") as history:
                history.write(json.dumps(entry) + "\n")

    best_metrics: dict = checkpoint.read_json(run_dir / checkpoint.METRICS_FILE, "metrics") if resume and (run_dir / checkpoint.METRICS_FILE).exists() else {}
    if config.init_from and not resume:
        # Score the starting weights, so "epoch 0" is the bar fine-tuning has to clear.
        metrics, captions = validate()
        append_history({"epoch": 0, "step": 0, "init_from": config.init_from, "init_weights": config.init_weights, "val": metrics, "val_examples": captions[:3]})
        log.info("starting weights from %s: val %s %.4f", config.init_from, config.eval.metric, metrics[config.eval.metric])
        best_metrics = keep_best(0, metrics, len(captions))

    stop = StopRequest()
    with stop.on_interrupt():
        for epoch in range(state["epoch"] + 1, config.optim.epochs + 1):
            # Checked before an epoch rather than after one, so that a run resumed from the state
            # saved after its last epoch stops where the uninterrupted run stopped.
            patience = config.optim.early_stopping_patience
            if patience and state["epochs_without_gain"] >= patience:
                log.info("no gain in %s for %d epochs: stopping early", config.eval.metric, patience)
                break
            loader = make_loader(
                dataset,
                batch_size=batch_size,
                shuffle=True,
                seed=config.seed,
                num_workers=config.data.num_workers,
                epoch=epoch,
                collate_fn=collate,
                skip_batches=state["batches_done"],
                rank=context.rank,
                world_size=context.world_size,
            )
            model.train()
            step.forcing.sampling_probability = scheduled_sampling_probability(epoch, config)
            step.epoch = epoch
            epoch_started = time.time()
            bar = tqdm(
                loader, desc=f"epoch {epoch}/{config.optim.epochs}", unit="batch", initial=state["batches_done"],
                total=steps_per_epoch, disable=not (progress and context.is_main),
            )
            for batch in bar:
                multiplier = learning_rate_at(state["step"], total_steps, steps_per_epoch, config)
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * multiplier
                outcome = step(batch)
                state["step"] += 1
                state["batches_done"] += 1
                if outcome is None:
                    state["bad_steps"] += 1
                    log.warning(
                        "non-finite loss or gradient at step %d: update skipped (%d in a row)",
                        state["step"], state["bad_steps"],
                    )
                    if state["bad_steps"] >= config.optim.max_bad_steps:
                        save_state()
                        raise TrainingDiverged(
                            f"{state['bad_steps']} steps in a row had a non-finite loss or gradient "
                            f"(last at step {state['step']}); lower optim.learning_rate or check the data, "
                            f"then --resume from {run_dir / checkpoint.LAST_DIR} or start again"
                        )
                else:
                    state["bad_steps"] = 0
                    if average is not None:
                        average.update()
                    tracked_sum, examples = outcome
                    state["running_sum"] += tracked_sum
                    state["running_count"] += examples
                    if writer is not None:
                        writer.add_scalar(f"train/{tracked_name}", tracked_sum / max(1, examples), state["step"])
                        writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state["step"])
                bar.set_postfix({
                    tracked_name: f"{state['running_sum'] / max(1, state['running_count']):.3f}",
                    "lr": f"{optimizer.param_groups[0]['lr']:.2e}",
                })
                every = config.optim.save_every_steps
                if stop.requested or (every and state["step"] % every == 0):
                    save_state()
                if stop.requested:
                    bar.close()
                    log.info("interrupted: saved the state after step %d; continue with --resume", state["step"])
                    raise KeyboardInterrupt
            train_seconds = time.time() - epoch_started

            metrics, captions = validate()
            score = metrics[config.eval.metric]
            entry = {
                "epoch": epoch,
                "step": state["step"],
                history_key: state["running_sum"] / max(1, state["running_count"]),
                "train_seconds": round(train_seconds, 2),
                **({"scheduled_sampling": step.forcing.sampling_probability}
                   if step.forcing.sampling_probability else {}),
                "val": metrics,
                "val_examples": captions[:3],
            }
            append_history(entry)
            if writer is not None:
                for name, value in metrics.items():
                    writer.add_scalar(f"val/{name}", value, epoch)
                writer.add_scalar(f"train/epoch_{tracked_name}", entry[history_key], epoch)
            log.info(
                "epoch %d: %s %.3f, val %s %.4f, BLEU-4 %.4f (%.0fs) e.g. %r",
                epoch, tracked_name.replace("_", "-"), entry[history_key], config.eval.metric, score,
                metrics.get("BLEU-4", float("nan")), train_seconds, captions[0] if captions else "",
            )

            if score > state["best_score"]:
                best_metrics = keep_best(epoch, metrics, len(captions))
            else:
                state["epochs_without_gain"] += 1
            state.update(epoch=epoch, batches_done=0, running_sum=0.0, running_count=0)
            save_state()
    if writer is not None:
        writer.close()
    shutdown_distributed(context)
    return TrainResult(run_dir, best_metrics, state["epoch"], time.time() - started)
