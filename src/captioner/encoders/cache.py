"""The feature cache: run a frozen encoder over every image once, then train from the disk copy.

A cache is a folder holding
- ``features.npy``: float16, memory-mappable, ``(N, R, D)`` region features (or ``(N, C, h, w)``
  trunk activations when built with ``trunk_only``, for fine-tuning the last blocks cheaply);
- ``index.json``: image path and id -> row, the encoder config and a digest of its weights, the
  array shape and dtype, and each image's status (``ok`` or why it could not be read).

While building, rows are written batch by batch and ``progress.json`` records how far it got, so
an interrupted run resumes. A finished cache is reused when asked again for the same encoder and
image list, and refused (one-line ``CheckpointError``) when asked for something else.

Reads records and images from ``captioner.data``; knows nothing about decoders or training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captioner.data.records import CaptionRecord
from captioner.encoders.base import Encoder, EncoderConfig, ImagePreprocess
from captioner.errors import BadImageError, CheckpointError, ConfigError

logger = logging.getLogger("captioner.encoders")

FEATURES_FILE = "features.npy"
INDEX_FILE = "index.json"
PROGRESS_FILE = "progress.json"
FORMAT_VERSION = 1
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class ImageNotCachedError(CheckpointError, KeyError):
    """A record whose image is not in the cache (also a ``KeyError``: it is a failed lookup)."""

    __str__ = Exception.__str__  # KeyError would quote the message


class ImageUnreadableInCacheError(BadImageError, KeyError):
    """A record whose image could not be read when the cache was built."""

    __str__ = Exception.__str__


@dataclass
class FeatureCacheReport:
    """What ``build_feature_cache`` did."""

    out_dir: Path
    num_images: int
    shape: tuple[int, ...]
    reused: bool = False
    resumed_from_row: int = 0
    num_encoded: int = 0
    bad_images: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.num_encoded / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        if self.reused:
            return (
                f"reused feature cache {self.out_dir}: {self.num_images} images, shape {self.shape}"
            )
        text = (
            f"feature cache {self.out_dir}: {self.num_images} images, shape {self.shape}, encoded "
            f"{self.num_encoded} in {self.seconds:.1f}s ({self.images_per_second:.1f} images/s)"
        )
        if self.resumed_from_row:
            text += f", resumed at row {self.resumed_from_row}"
        if self.bad_images:
            text += f", {len(self.bad_images)} unreadable image(s) skipped"
        return text


def _image_key(path: Path | str) -> str:
    return str(Path(path).resolve())


def _unique_images(records: Sequence[CaptionRecord]) -> list[tuple[str, str]]:
    """(resolved path, image id) per distinct image, in record order."""
    seen: dict[str, str] = {}
    for record in records:
        seen.setdefault(_image_key(record.image_path), str(record.image_id))
    return list(seen.items())


def _fingerprint(
    encoder: Encoder, trunk_only: bool, paths: Sequence[str], shape: Sequence[int], mirrored: bool = False
) -> dict[str, Any]:
    fingerprint = {
        "format_version": FORMAT_VERSION,
        "encoder": encoder.config.to_dict(),
        "weights_digest": encoder.weights_digest(),
        "preprocess": encoder.preprocess.to_dict(),
        "trunk_only": trunk_only,
        "num_images": len(paths),
        "images_sha256": hashlib.sha256("\n".join(paths).encode()).hexdigest(),
        "shape": list(shape),
        "dtype": "float16",
    }
    if mirrored:  # only then, so that caches written before the option keep their fingerprint
        fingerprint["mirrored"] = True
    return fingerprint


def _describe(fingerprint: dict[str, Any]) -> str:
    encoder = fingerprint["encoder"]
    what = "trunk activations" if fingerprint["trunk_only"] else "features"
    if fingerprint.get("mirrored"):
        what += " of the mirrored photos"
    return (
        f"{encoder['name']}/{encoder['layer']} {what} at {encoder['image_size']} px "
        f"(weights {fingerprint['weights_digest']}) of {fingerprint['num_images']} images"
    )


def _refuse_mismatch(
    out_dir: Path, existing: dict[str, Any], wanted: dict[str, Any]
) -> CheckpointError:
    keys = [*wanted, *(key for key in existing if key not in wanted)]
    differing = [key for key in keys if existing.get(key) != wanted.get(key)]
    return CheckpointError(
        f"feature cache {out_dir} holds {_describe(existing)}, but this run wants {_describe(wanted)} "
        f"(differs in {', '.join(differing)}); pass another --out or delete {out_dir}"
    )


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically, so a crash leaves either the old file or the new one."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(payload, indent=1))
    os.replace(temporary, path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(
            f"cannot read {path} ({error}); delete {path.parent} and build the cache again"
        ) from None


class _ImageFiles(torch.utils.data.Dataset):
    """Row -> (row, preprocessed image or None, why it failed or None); runs in loader workers."""

    def __init__(
        self, paths: Sequence[str], rows: Sequence[int], preprocess: ImagePreprocess
    ) -> None:
        self.paths = paths
        self.rows = rows
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> tuple[int, torch.Tensor | None, str | None]:
        from captioner.data.images import load_rgb_image

        row = self.rows[index]
        try:
            return row, self.preprocess(load_rgb_image(self.paths[row])), None
        except BadImageError as error:
            return row, None, str(error)


def _collate(
    items: list[tuple[int, torch.Tensor | None, str | None]],
) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(row, image) for row, image, _ in items if image is not None]
    failures = [
        (row, reason) for row, image, reason in items if image is None and reason is not None
    ]
    images = torch.stack([image for _, image in good]) if good else None
    return [row for row, _ in good], images, failures


def build_feature_cache(
    records: Sequence[CaptionRecord],
    encoder: Encoder,
    out_dir: str | Path,
    batch_size: int = 64,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    trunk_only: bool = False,
    progress: bool = True,
    mirrored: bool = False,
) -> FeatureCacheReport:
    """Encode every distinct image of ``records`` into ``out_dir`` (see the module docstring).

    ``mirrored`` encodes each photo flipped left to right instead, for training with mirrored
    copies (``data.mirror_feature_cache``); the grid is stored as the flipped photo gives it.

    Unreadable images are skipped (their rows stay zero, their status says why) and listed in the
    report. Inputs and weights are channels-last on every device (oneDNN on CPU is several times
    faster that way for depthwise convolutions); on ``"cuda"`` the forward also runs under fp16
    autocast. Moves ``encoder`` to ``device`` and leaves it in eval mode.
    """
    from tqdm.auto import tqdm

    if encoder.trainable_from_scratch:
        raise ConfigError(
            f"encoder {encoder.config.name} trains together with the captioner, so its features "
            "change every step and cannot be cached; train it end to end instead"
        )
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device cuda was asked for but no CUDA GPU is available; use --device cpu"
        )
    images = _unique_images(records)
    if not images:
        raise ConfigError("no images to encode: the record list is empty")
    paths = [path for path, _ in images]
    out_dir = Path(out_dir)
    started = time.perf_counter()

    encoder.to(device).eval()
    per_image = (
        encoder.trunk_shape() if trunk_only else (encoder.num_regions(), encoder.feature_dim)
    )
    shape = (len(paths), *per_image)
    wanted = _fingerprint(encoder, trunk_only, paths, shape, mirrored)

    index_path, progress_path, features_path = (
        out_dir / INDEX_FILE,
        out_dir / PROGRESS_FILE,
        out_dir / FEATURES_FILE,
    )
    start_row, bad_rows = 0, {}
    if index_path.exists():
        index = _read_json(index_path)
        if index.get("fingerprint") != wanted:
            raise _refuse_mismatch(out_dir, index.get("fingerprint", {}), wanted)
        FeatureCache.open(out_dir)  # checks the array against the index
        logger.info("feature cache %s already holds these images; reusing it", out_dir)
        bad = {
            entry["path"]: entry["status"] for entry in index["images"] if entry["status"] != "ok"
        }
        return FeatureCacheReport(out_dir, len(paths), shape, reused=True, bad_images=bad)
    if progress_path.exists():
        state = _read_json(progress_path)
        if state.get("fingerprint") != wanted:
            raise _refuse_mismatch(out_dir, state.get("fingerprint", {}), wanted)
        start_row = int(state["rows_done"])
        bad_rows = {int(row): reason for row, reason in state["bad"].items()}
    elif features_path.exists():
        raise CheckpointError(
            f"{features_path} exists without {INDEX_FILE} or {PROGRESS_FILE}: it is not a feature cache "
            f"this program can finish; delete {out_dir} or pass another --out"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    if start_row:
        features = np.load(features_path, mmap_mode="r+")
        if features.shape != shape or features.dtype != np.float16:
            raise CheckpointError(
                f"{features_path} does not match its {PROGRESS_FILE}; delete {out_dir} and rebuild"
            )
        logger.info("resuming feature cache %s at image %d of %d", out_dir, start_row, len(paths))
    else:
        features = np.lib.format.open_memmap(
            features_path, mode="w+", dtype=np.float16, shape=shape
        )

    rows = range(start_row, len(paths))
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, rows, encoder.preprocess),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
    )
    on_cuda = device.type == "cuda"
    # Channels-last on CPU too: lite0 ran 10.0 vs 6.4 images/s at batch 32 on this project's
    # CPU (benchmarks/results/encoders.md).
    encoder.to(memory_format=torch.channels_last)
    autocast = torch.autocast("cuda", dtype=torch.float16) if on_cuda else contextlib.nullcontext()
    bar = tqdm(
        total=len(paths), initial=start_row, unit="img", desc="features", disable=not progress
    )
    encoded = 0
    try:
        for good_rows, batch, failures in loader:
            for row, reason in failures:
                bad_rows[row] = reason
                logger.warning("skipping %s", reason)
            if batch is not None:
                batch = batch.to(device, non_blocking=True)
                if mirrored:
                    batch = torch.flip(batch, dims=[3])
                batch = batch.contiguous(memory_format=torch.channels_last)
                with torch.inference_mode():
                    with autocast:
                        output = encoder.forward_trunk(batch) if trunk_only else encoder(batch)
                    values = output.float().clamp(-_FLOAT16_MAX, _FLOAT16_MAX).cpu().numpy()
                features[good_rows[0] : good_rows[-1] + 1] = _place(values, good_rows)
                encoded += len(good_rows)
            done = max(good_rows + [row for row, _ in failures]) + 1
            features.flush()  # rows reach the disk before progress.json claims them
            _write_json(
                progress_path,
                {
                    "fingerprint": wanted,
                    "rows_done": done,
                    "bad": {str(r): m for r, m in bad_rows.items()},
                },
            )
            bar.update(len(good_rows) + len(failures))
    finally:
        bar.close()
    features.flush()
    del features

    entries = [
        {"path": path, "image_id": image_id, "row": row, "status": bad_rows.get(row, "ok")}
        for row, (path, image_id) in enumerate(images)
    ]
    _write_json(
        index_path,
        {
            "format_version": FORMAT_VERSION,
            "complete": True,
            "fingerprint": wanted,
            "images": entries,
        },
    )
    progress_path.unlink(missing_ok=True)
    report = FeatureCacheReport(
        out_dir,
        len(paths),
        shape,
        resumed_from_row=start_row,
        num_encoded=encoded,
        bad_images={paths[row]: reason for row, reason in sorted(bad_rows.items())},
        seconds=time.perf_counter() - started,
    )
    logger.debug("%s", report.summary())  # the CLI prints it; once is enough
    return report


def _place(values: np.ndarray, good_rows: list[int]) -> np.ndarray:
    """Rows ``good_rows[0]..good_rows[-1]`` with bad images (gaps) left as zeros."""
    first = good_rows[0]
    block = np.zeros((good_rows[-1] - first + 1, *values.shape[1:]), dtype=np.float16)
    block[[row - first for row in good_rows]] = values
    return block


class FeatureCache:
    """A finished cache opened read-only; rows come back as float32 tensors.

    The array is a ``np.memmap``: DataLoader workers share its pages through the OS page cache
    instead of each holding a copy (and pickling to a worker re-opens the file rather than
    copying the array).
    """

    def __init__(self, directory: Path, index: dict[str, Any]) -> None:
        self.directory = directory
        self._index = index
        fingerprint = index["fingerprint"]
        self.config = EncoderConfig.from_dict(fingerprint["encoder"])
        self.trunk_only: bool = fingerprint["trunk_only"]
        self.mirrored: bool = fingerprint.get("mirrored", False)
        self.shape: tuple[int, ...] = tuple(fingerprint["shape"])
        self.weights_digest: str = fingerprint["weights_digest"]
        self._row_by_path = {entry["path"]: entry["row"] for entry in index["images"]}
        ids = [entry["image_id"] for entry in index["images"]]
        # Ids are a fallback for a dataset that moved; only usable when they are unique.
        self._row_by_id = (
            {entry["image_id"]: entry["row"] for entry in index["images"]}
            if len(set(ids)) == len(ids)
            else {}
        )
        self._status = [entry["status"] for entry in index["images"]]
        self._features: np.ndarray | None = None

    @classmethod
    def open(cls, directory: str | Path) -> FeatureCache:
        directory = Path(directory)
        index_path = directory / INDEX_FILE
        if not index_path.exists():
            if (directory / PROGRESS_FILE).exists():
                raise CheckpointError(
                    f"feature cache {directory} is unfinished: run captioner features again "
                    "with the same options to finish it"
                )
            raise CheckpointError(
                f"{directory} is not a feature cache (no {INDEX_FILE}); "
                f"build one with captioner features --out {directory}"
            )
        index = _read_json(index_path)
        if index.get("format_version") != FORMAT_VERSION or not index.get("complete"):
            raise CheckpointError(
                f"feature cache {directory} has an unknown or unfinished format; delete it and rebuild"
            )
        cache = cls(directory, index)
        features = cache._array()
        if tuple(features.shape) != cache.shape or features.dtype != np.float16:
            raise CheckpointError(
                f"{directory / FEATURES_FILE} has shape {features.shape} {features.dtype}, but "
                f"{INDEX_FILE} says {cache.shape} float16; delete {directory} and rebuild"
            )
        return cache

    def _array(self) -> np.ndarray:
        if self._features is None:
            path = self.directory / FEATURES_FILE
            try:
                self._features = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as error:
                raise CheckpointError(
                    f"cannot open {path} ({error}); delete {self.directory} and rebuild"
                ) from None
        return self._features

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_features"] = None
        return state

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, row: int) -> torch.Tensor:
        """Row ``row`` as float32: ``(R, D)`` features, or ``(C, h, w)`` trunk activations."""
        return torch.from_numpy(np.asarray(self._array()[row], dtype=np.float32))

    @property
    def encoder_config(self) -> EncoderConfig:
        """Same as ``config``: the encoder the cache was built with."""
        return self.config

    @property
    def feature_dim(self) -> int:
        return self.shape[1] if self.trunk_only else self.shape[2]

    @property
    def bad_images(self) -> dict[str, str]:
        """Path -> reason, for images that could not be read when the cache was built."""
        return {
            entry["path"]: entry["status"]
            for entry in self._index["images"]
            if entry["status"] != "ok"
        }

    def _find(self, record: CaptionRecord) -> int | None:
        row = self._row_by_path.get(_image_key(record.image_path))
        return row if row is not None else self._row_by_id.get(str(record.image_id))

    def __contains__(self, record: object) -> bool:
        if not isinstance(record, CaptionRecord):
            return False
        row = self._find(record)
        return row is not None and self._status[row] == "ok"

    def row_of(self, record: CaptionRecord) -> int:
        """The row holding ``record``'s image.

        Raises ``ImageNotCachedError`` (a ``CheckpointError``) for an image the cache never saw and
        ``ImageUnreadableInCacheError`` (a ``BadImageError``) for one it could not read; both are
        also ``KeyError``. ``record in cache`` asks without raising.
        """
        row = self._find(record)
        if row is None:
            raise ImageNotCachedError(
                f"image {record.image_path} is not in feature cache {self.directory} ({len(self)} images); "
                "rebuild the cache with the same dataset and splits as training"
            )
        if self._status[row] != "ok":
            raise ImageUnreadableInCacheError(self._status[row])
        return row

    def rows(self) -> Iterator[int]:
        """Rows of readable images."""
        return (row for row, status in enumerate(self._status) if status == "ok")
