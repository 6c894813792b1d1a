"""The training loop: teacher forcing with masked cross-entropy, validated by CIDEr-D.

Read it top to bottom: build the data, the model and the optimiser; then for every epoch run
the batches (loss = cross-entropy of the next word + the doubly stochastic attention penalty),
caption the validation split, keep the best weights, stop early when validation stops improving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from captioner.data.batches import CaptionTrainingSet, ImageSet, collate_captions, collate_images, make_loader
from captioner.data.readers import load_records
from captioner.data.records import CaptionRecord
from captioner.data.text import Vocabulary, tokenize_caption
from captioner.decoding import DecodeSettings
from captioner.encoders.base import Encoder
from captioner.encoders.cache import FeatureCache
from captioner.encoders.registry import build_encoder
from captioner.errors import CheckpointError, ConfigError
from captioner.metrics.cider_reward import CiderDReward
from captioner.models.attention import doubly_stochastic_penalty
from captioner.models.captioning import CaptioningModel
from captioner.models.decoder import ShowAttendTellDecoder
from captioner.training import checkpoint
from captioner.training.config import RunConfig
from captioner.training.evaluation import caption_records, score_predictions, search_tokens
from captioner.training.inputs import (
    CachedInput,
    InputKind,
    PixelInput,
    records_in_cache,
    regions_from_inputs,
)
from captioner.training.self_critical import self_critical_loss

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


def restore_model(loaded: checkpoint.LoadedRun) -> CaptioningModel:
    """Rebuild a run's model and load its weights, strictly.

    A run directory without encoder weights (a shipped model with a frozen pretrained encoder)
    takes the encoder from its pretrained source and loads only the decoder.
    """
    source = loaded.run_dir / checkpoint.WEIGHTS_FILE
    if checkpoint.has_encoder_weights(loaded.weights):
        model = build_model(loaded.config, loaded.vocabulary, pretrained_encoder=False)
        checkpoint.load_state_strict(model, loaded.weights, source)
    else:
        model = build_model(loaded.config, loaded.vocabulary, pretrained_encoder=True)
        checkpoint.load_state_strict(model.decoder, checkpoint.decoder_weights(loaded.weights), source)
    return model


def load_initial_weights(model: CaptioningModel, config: RunConfig) -> checkpoint.LoadedRun:
    """Start from ``config.init_from``'s weights; its encoder settings must be this run's."""
    loaded = checkpoint.load_run(config.init_from)
    for name in ("name", "layer", "image_size"):
        if getattr(loaded.config.encoder, name) != getattr(config.encoder, name):
            raise ConfigError(
                f"init_from {config.init_from} was trained with encoder {name}="
                f"{getattr(loaded.config.encoder, name)!r} but this run asks for "
                f"{getattr(config.encoder, name)!r}"
            )
    source = loaded.run_dir / checkpoint.WEIGHTS_FILE
    if checkpoint.has_encoder_weights(loaded.weights):
        checkpoint.load_state_strict(model, loaded.weights, source)
    else:
        checkpoint.load_state_strict(model.decoder, checkpoint.decoder_weights(loaded.weights), source)
    return loaded


@dataclass
class TrainingData:
    train_records: list[CaptionRecord]
    val_records: list[CaptionRecord]
    vocabulary: Vocabulary
    train_input: PixelInput | CachedInput
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
    else:
        kind = InputKind.PIXELS
        train_input = val_input = PixelInput(model_preprocess)
    if not train_records:
        raise ConfigError(f"no training images in {data.path} (split {data.train_split!r})")
    return TrainingData(train_records, val_records, vocabulary, train_input, val_input, kind)


def check_cache_matches(cache: FeatureCache, config: RunConfig) -> None:
    cached, wanted = cache.encoder_config, config.encoder
    for name in ("name", "layer", "image_size"):
        if getattr(cached, name) != getattr(wanted, name):
            raise ConfigError(
                f"feature cache {config.data.feature_cache} was made with encoder {name}="
                f"{getattr(cached, name)!r} but the run asks for {getattr(wanted, name)!r}; "
                "rebuild it with `captioner features` or change the encoder settings"
            )
    if cache.trunk_only != (config.encoder.fine_tune_blocks > 0):
        raise ConfigError(
            f"feature cache {config.data.feature_cache} holds "
            f"{'trunk activations' if cache.trunk_only else 'final features'}, which fits "
            f"{'' if cache.trunk_only else 'no '}encoder fine-tuning; set encoder.fine_tune_blocks "
            "accordingly or rebuild the cache"
        )
    if cache.trunk_only and config.encoder.fine_tune_blocks != cache.encoder_config.fine_tune_blocks:
        raise ConfigError(
            f"feature cache {config.data.feature_cache} holds trunk activations for "
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


def caption_loss(
    model: CaptioningModel,
    regions: torch.Tensor,
    captions: torch.Tensor,
    pad_id: int,
    config: RunConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked next-word cross-entropy plus the attention penalty; returns (total, cross-entropy)."""
    out = model.decoder(regions, captions)
    targets = captions[:, 1:]
    mask = targets != pad_id
    cross_entropy = F.cross_entropy(
        out.logits[mask].float(), targets[mask], label_smoothing=config.optim.label_smoothing
    )
    penalty = doubly_stochastic_penalty(out.alphas.float(), mask.float())
    return cross_entropy + config.optim.attention_regularization * penalty, cross_entropy


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
    device = resolve_device(config.device)

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
        if saved != config.to_dict():
            raise CheckpointError(
                f"{run_dir / checkpoint.CONFIG_FILE} differs from this run's settings; "
                "resume with the same settings (or `--config` that file)"
            )
    # The encoder's preprocessing is needed to read the data, and the data's vocabulary to
    # size the decoder: encoder first, then data, then the decoder from a fixed seed.
    encoder = build_encoder(config.encoder)
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
        reward = CiderDReward({r.image_id: [tokenize_caption(c) for c in r.captions] for r in data.train_records})
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
    tokens = search_tokens(vocabulary)
    tracked_name = "reward" if self_critical else "cross_entropy"
    history_key = "train_reward" if self_critical else "train_loss"
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(len(dataset) / config.optim.batch_size)
    total_steps = steps_per_epoch * config.optim.epochs
    autocast_dtype = None
    scaler = None
    if device.type == "cuda" and config.mixed_precision:
        autocast_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if autocast_dtype == torch.float16:
            scaler = torch.amp.GradScaler("cuda")

    state = {"epoch": 0, "step": 0, "best_score": -1.0, "best_epoch": 0, "epochs_without_gain": 0}
    if resume:
        state = checkpoint.load_training_state(run_dir, model, optimizer)
        log.info("resuming after epoch %d (best %s %.4f)", state["epoch"], config.eval.metric, state["best_score"])
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / checkpoint.CONFIG_FILE)
        vocabulary.save(run_dir / checkpoint.VOCAB_FILE)
    from torch.utils.tensorboard import SummaryWriter  # heavy import, only when training

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    history_path = run_dir / "history.jsonl"
    settings = DecodeSettings(
        beam_size=config.eval.beam_size,
        max_length=config.data.max_caption_words,
        length_penalty=config.eval.length_penalty,
        no_repeat_ngram_size=config.eval.no_repeat_ngram_size,
    )
    log.info(
        "training on %d images (%d examples/epoch, %d steps/epoch), validating on %d, vocabulary %d words, device %s",
        len(data.train_records), len(dataset), steps_per_epoch, len(data.val_records), len(vocabulary), device,
    )

    def validate() -> tuple[dict[str, float], list[str]]:
        predictions = caption_records(
            model, data.val_records, data.val_input, data.input_kind, vocabulary, settings, device,
            batch_size=config.eval.batch_size, num_workers=config.data.num_workers, progress=progress,
        )
        scores = score_predictions(predictions, meteor=False)
        metrics = {k: v for k, v in scores.corpus.items() if v is not None}
        return metrics, [p.caption for p in predictions]

    def keep_if_best(epoch: int, metrics: dict[str, float], images: int) -> dict:
        state.update(best_score=metrics[config.eval.metric], best_epoch=epoch, epochs_without_gain=0)
        best = {"split": config.data.val_split, "epoch": epoch, "images": images, "decoding": settings.__dict__, **metrics}
        checkpoint.save_run(run_dir, config, vocabulary, model, best)
        return best

    best_metrics: dict = checkpoint.read_json(run_dir / checkpoint.METRICS_FILE, "metrics") if resume and (run_dir / checkpoint.METRICS_FILE).exists() else {}
    if config.init_from and not resume:
        # Score the starting weights, so "epoch 0" is the bar fine-tuning has to clear.
        metrics, captions = validate()
        with history_path.open("a", encoding="utf-8") as history:
            history.write(json.dumps({"epoch": 0, "step": 0, "init_from": config.init_from, "val": metrics,
                                      "val_examples": captions[:3]}) + "\n")
        log.info("starting weights from %s: val %s %.4f", config.init_from, config.eval.metric, metrics[config.eval.metric])
        best_metrics = keep_if_best(0, metrics, len(captions))
    for epoch in range(state["epoch"] + 1, config.optim.epochs + 1):
        loader = make_loader(
            dataset,
            batch_size=config.optim.batch_size,
            shuffle=True,
            seed=config.seed,
            num_workers=config.data.num_workers,
            epoch=epoch,
            collate_fn=collate,
        )
        model.train()
        epoch_started = time.time()
        running_loss, running_count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch}/{config.optim.epochs}", unit="batch", disable=not progress)
        for batch in bar:
            multiplier = learning_rate_at(state["step"], total_steps, steps_per_epoch, config)
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * multiplier
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                regions = regions_from_inputs(model, batch.inputs, data.input_kind)
                if reward is not None:
                    keys = [data.train_records[i].image_id for i in batch.record_indices.tolist()]
                    scst = config.scst
                    outcome = self_critical_loss(
                        model.decoder, regions.float(), keys, reward, vocabulary, tokens,
                        samples=scst.samples, baseline=scst.baseline, max_length=scst.max_words,
                        temperature=scst.temperature,
                    )
                    loss, tracked = outcome.loss, torch.tensor(outcome.mean_reward)
                else:
                    loss, tracked = caption_loss(model, regions, batch.captions, vocabulary.pad_id, config)
                    tracked = tracked.detach()
            if not torch.isfinite(loss):
                log.warning("non-finite loss at step %d: batch skipped", state["step"])
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], config.optim.grad_clip
            )
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            state["step"] += 1
            examples = len(batch)
            running_loss += tracked.item() * examples
            running_count += examples
            bar.set_postfix({tracked_name: f"{running_loss / running_count:.3f}", "lr": f"{optimizer.param_groups[0]['lr']:.2e}"})
            writer.add_scalar(f"train/{tracked_name}", tracked.item(), state["step"])
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state["step"])
        train_seconds = time.time() - epoch_started

        metrics, captions = validate()
        score = metrics[config.eval.metric]
        entry = {
            "epoch": epoch,
            "step": state["step"],
            history_key: running_loss / max(1, running_count),
            "train_seconds": round(train_seconds, 2),
            "val": metrics,
            "val_examples": captions[:3],
        }
        with history_path.open("a", encoding="utf-8") as history:
            history.write(json.dumps(entry) + "\n")
        for name, value in metrics.items():
            writer.add_scalar(f"val/{name}", value, epoch)
        writer.add_scalar(f"train/epoch_{tracked_name}", entry[history_key], epoch)
        log.info(
            "epoch %d: %s %.3f, val %s %.4f, BLEU-4 %.4f (%.0fs) e.g. %r",
            epoch, tracked_name.replace("_", "-"), entry[history_key], config.eval.metric, score,
            metrics.get("BLEU-4", float("nan")), train_seconds, captions[0] if captions else "",
        )

        if score > state["best_score"]:
            best_metrics = keep_if_best(epoch, metrics, len(captions))
        else:
            state["epochs_without_gain"] += 1
        state["epoch"] = epoch
        checkpoint.save_training_state(run_dir, model, optimizer, state)
        patience = config.optim.early_stopping_patience
        if patience and state["epochs_without_gain"] >= patience:
            log.info("no gain in %s for %d epochs: stopping early", config.eval.metric, patience)
            break
    writer.close()
    return TrainResult(run_dir, best_metrics, state["epoch"], time.time() - started)
