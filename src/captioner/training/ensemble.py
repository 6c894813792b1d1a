"""Ensemble directories: several trained runs exported side by side, captioning as one model.

Owns: writing an ensemble (``make_ensemble``: each run exported as by ``captioner export`` into
``members/<n>/``, and ``ensemble.json`` naming them with their mixture weights) and loading one
(``load_ensemble``: a ``CaptioningModel`` of ``captioner.models.ensemble``'s encoder and decoder
ensembles). Members must share one vocabulary, one input size and one region grid; members with
the same frozen encoder share one copy of it, so each distinct CNN runs once per photo.

The first member's config governs decoding and guidance defaults (``eval``) and the input size,
except for the ``eval`` settings that ``ensemble.json`` sets itself (``captioner ensemble --set
eval.guidance_trust=0.7``: a mixture is surer of its words than one decoder, so the guidance
margins chosen for a member need not suit it). Guidance reads the first member's encoder that
has an ImageNet classifier.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.data.text import Vocabulary
from captioner.errors import CaptionerError, CheckpointError
from captioner.models.captioning import CaptioningModel
from captioner.models.ensemble import DecoderEnsemble, EncoderEnsemble
from captioner.training import checkpoint
from captioner.training.config import RunConfig
from captioner.training.loop import restore_model

FORMAT = "captioner-ensemble-v1"
MEMBERS_DIR = "members"


@dataclass
class LoadedEnsemble:
    model: CaptioningModel
    vocabulary: Vocabulary
    config: RunConfig
    """The first member's, with the ensemble's own ``eval`` settings."""
    metrics: dict[str, Any]
    """The ensemble's own ``metrics.json`` (its members' are in their folders)."""
    members: list[Path]
    weights: list[float]


def is_ensemble(directory: str | Path) -> bool:
    return (Path(directory) / checkpoint.ENSEMBLE_FILE).is_file()


def _check_weights(weights: Sequence[float], count: int, source: str) -> list[float]:
    if len(weights) != count:
        raise CheckpointError(f"{source}: {count} members but {len(weights)} weights; give one weight per member")
    values = [float(w) for w in weights]
    if any(not math.isfinite(w) or w <= 0 for w in values):
        raise CheckpointError(f"{source}: weights must be positive numbers, got {values}")
    return values


def _check_members(runs: Sequence[checkpoint.LoadedRun]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.vocabulary.words != first.vocabulary.words:
            raise CheckpointError(
                f"{run.run_dir} has another vocabulary than {first.run_dir} ({len(run.vocabulary)} vs "
                f"{len(first.vocabulary)} words); ensemble only runs trained on the same captions with the "
                "same data.min_word_count"
            )
        if run.config.encoder.image_size != first.config.encoder.image_size:
            raise CheckpointError(
                f"{run.run_dir} reads {run.config.encoder.image_size} px photos but {first.run_dir} reads "
                f"{first.config.encoder.image_size} px; an ensemble's members must share one input size"
            )


def make_ensemble(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    weights: Sequence[float] | None = None,
    int8: bool = False,
    eval_settings: dict[str, Any] | None = None,
) -> LoadedEnsemble:
    """Export ``run_dirs`` into the ensemble directory ``out`` (replacing an ensemble there) and
    load it back, so that a mismatch of encoders fails here rather than at captioning time."""
    if not run_dirs:
        raise CheckpointError("an ensemble needs at least one run")
    out = Path(out)
    weights = _check_weights(weights or [1.0] * len(run_dirs), len(run_dirs), "captioner ensemble")
    runs = [checkpoint.load_run(path) for path in run_dirs]
    _check_members(runs)
    if eval_settings:
        _with_eval_settings(runs[0].config, eval_settings, "captioner ensemble --set")
    if out.exists() and any(out.iterdir()) and not is_ensemble(out):
        raise CheckpointError(f"{out} exists and is not an ensemble directory; choose an empty or new --out")
    for run in runs:
        # Rewriting ``out`` replaces its members, which would delete a run read from there.
        if run.run_dir.resolve().is_relative_to(out.resolve()):
            raise CheckpointError(f"{run.run_dir} is inside {out}, which would be rewritten; choose another --out")
    shutil.rmtree(out / MEMBERS_DIR, ignore_errors=True)
    members = []
    for index, run in enumerate(runs):
        relative = f"{MEMBERS_DIR}/{index}"
        checkpoint.export_run(run, out / relative, int8=int8)
        members.append({"path": relative, "weight": weights[index], "source": str(run.run_dir)})
    manifest: dict[str, Any] = {"format": FORMAT, "members": members}
    if eval_settings:
        manifest["eval"] = eval_settings
    checkpoint.write_json(out / checkpoint.ENSEMBLE_FILE, manifest)
    (out / checkpoint.METRICS_FILE).unlink(missing_ok=True)
    return load_ensemble(out)


def load_ensemble(directory: str | Path) -> LoadedEnsemble:
    directory = Path(directory)
    manifest_path = directory / checkpoint.ENSEMBLE_FILE
    manifest = checkpoint.read_json(manifest_path, "ensemble")
    entries = manifest.get("members") if isinstance(manifest, dict) else None
    if not isinstance(entries, list) or not entries or manifest.get("format") != FORMAT:
        raise CheckpointError(
            f"{manifest_path} is not a captioner ensemble ({FORMAT} with a list of members); "
            "write it with `captioner ensemble RUN RUN --out DIR`"
        )
    try:
        paths = [directory / str(entry["path"]) for entry in entries]
        weights = _check_weights([entry["weight"] for entry in entries], len(entries), str(manifest_path))
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(
            f"{manifest_path}: every member needs a 'path' and a numeric 'weight'; "
            "write it with `captioner ensemble RUN RUN --out DIR`"
        ) from None
    for path in paths:
        if not path.is_dir():
            raise CheckpointError(f"{manifest_path} names member {path}, which is missing; copy the whole ensemble folder")
    runs = [checkpoint.load_run(path) for path in paths]
    _check_members(runs)
    config = runs[0].config
    if manifest.get("eval"):
        config = _with_eval_settings(config, manifest["eval"], str(manifest_path))

    # Members with the same frozen pretrained encoder share one copy: it is built once, and its
    # CNN runs once a photo.
    models = []
    encoders: list = []
    keys: list[str | None] = []
    member_encoder: list[int] = []
    for run in runs:
        frozen = run.config.encoder.pretrained and not run.config.encoder.fine_tune_blocks
        key = repr(run.config.encoder.to_dict()) if frozen and not checkpoint.has_encoder_weights(run.weights) else None
        if key is not None and key in keys:
            models.append(restore_model(run, encoder=encoders[keys.index(key)]))
            member_encoder.append(keys.index(key))
            continue
        models.append(restore_model(run))
        keys.append(key)
        encoders.append(models[-1].encoder)
        member_encoder.append(len(encoders) - 1)
    try:
        encoder = EncoderEnsemble(encoders, runs[0].config.encoder.image_size)
        decoder = DecoderEnsemble(
            [model.decoder for model in models], [encoder.feature_slice(i) for i in member_encoder], weights
        )
    except ValueError as error:
        raise CheckpointError(f"{directory}: {error}") from None
    metrics_path = directory / checkpoint.METRICS_FILE
    metrics = checkpoint.read_json(metrics_path, "metrics") if metrics_path.exists() else {}
    return LoadedEnsemble(
        CaptioningModel(encoder, decoder),  # type: ignore[arg-type]
        runs[0].vocabulary, config, metrics, paths, decoder.weights,
    )


def _with_eval_settings(config: RunConfig, settings: Any, source: str) -> RunConfig:
    """``config`` with ``settings`` (a dict of ``eval`` fields) replacing its own, checked."""
    if not isinstance(settings, dict):
        raise CheckpointError(f"{source}: 'eval' must map eval settings to values, e.g. {{\"guidance_trust\": 0.7}}")
    values = config.to_dict()
    values["eval"] = {**values["eval"], **settings}
    try:
        return RunConfig.from_dict(values, source=source)
    except CaptionerError as error:
        raise CheckpointError(str(error)) from None
