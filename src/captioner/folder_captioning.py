"""Captioning a whole folder of photos into a results file that survives crashes and reruns.

Owns: finding the images under a folder (``find_images``), the JSONL/CSV results file with its
recovery rules (``ResultsFile``), and the loop that loads pictures on a thread while the model
captions the previous batch (``caption_folder``). The CLI ``captioner caption-dir`` is a thin
layer over ``caption_folder``. Must not know about argument parsing or how a model decodes.

Results file rules, so that a rerun with the same file resumes exactly where a crash or Ctrl-C
stopped:

- one record per image, keyed by its path relative to the folder (``/`` separated); a batch's
  records are appended in one write, then flushed and fsynced;
- on start, a last line that is incomplete or unparseable (a write cut short) is truncated away
  and its image done again; any other unreadable line is an error naming the file and line, so
  that a file that is not ours is never rewritten;
- an image recorded with an error counts as done (a broken file is not retried on every run)
  unless ``retry_errors``, which first rewrites the file without its error records.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections import deque
from contextlib import closing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from captioner.data.images import IMAGE_EXTENSIONS, load_rgb_image
from captioner.errors import BadImageError, CaptionerError

if TYPE_CHECKING:
    from captioner.api import Captioner

FORMATS = ("jsonl", "csv")
CSV_COLUMNS = ("image", "caption", "score", "error")
# Batches decoded ahead of the one being captioned: enough to hide a slow file, and a bound on
# the memory held in decoded pictures.
_PREFETCH_BATCHES = 2
_JSONL_START = '{"image": '


@dataclass(frozen=True)
class FolderRecord:
    """One line of the results file: a caption and its log-probability, or an error."""

    image: str
    """Path relative to the folder, ``/`` separated."""
    caption: str | None = None
    score: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"image": self.image, "error": self.error}
        return {"image": self.image, "caption": self.caption, "score": self.score}


def format_for(out: str | Path, fmt: str | None = None) -> str:
    """``fmt`` when given, else ``csv`` for a ``.csv`` file and ``jsonl`` otherwise."""
    if fmt is None:
        return "csv" if Path(out).suffix.lower() == ".csv" else "jsonl"
    if fmt not in FORMATS:
        raise CaptionerError(f"unknown results format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt


@dataclass
class FolderListing:
    images: list[str]
    """Relative paths, sorted, ``/`` separated."""
    unreadable_folders: list[str] = field(default_factory=list)
    """Relative paths of sub-folders that could not be listed (permissions), with the reason."""


def find_images(root: str | Path) -> FolderListing:
    """Every file under ``root`` whose suffix is an image extension (any case).

    Hidden files and folders (names starting with ``.``, e.g. ``.thumbnails``, macOS ``._x.jpg``)
    are skipped. Symlinked folders are followed once each (a link loop ends there); a broken
    symlink named like an image is listed, so that it is reported rather than silently missed.
    A folder named like an image (``album.jpg/``) is walked, not captioned.
    """
    root = Path(root)
    if not root.is_dir():
        problem = "does not exist" if not root.exists() else "is not a folder"
        raise CaptionerError(f"{root} {problem}; pass the folder that holds the photos")
    listing = FolderListing(images=[])
    seen: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            identity = folder.stat()
            key = (identity.st_dev, identity.st_ino)
            if key in seen:
                continue
            seen.add(key)
            with os.scandir(folder) as scan:
                entries = list(scan)
        except OSError as error:
            listing.unreadable_folders.append(f"{prefix or '.'}: {error.strerror or error}")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            relative = f"{prefix}{entry.name}"
            try:
                is_dir = entry.is_dir()  # follows symlinks; False for a broken one
            except OSError:
                is_dir = False
            if is_dir:
                stack.append((Path(entry.path), relative + "/"))
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                listing.images.append(relative)
    listing.images.sort()
    return listing


class ResultsFileError(CaptionerError):
    """A results file that is not one ``caption-dir`` wrote, or that cannot be written."""


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _lines(text: str) -> list[str]:
    """Lines ending in ``\n`` only: str.splitlines would also split at characters such as
    U+2028 that JSON leaves unescaped inside strings."""
    return [line + "\n" for line in text.split("\n")[:-1]]


def _record_from_mapping(values: Any) -> FolderRecord | None:
    if not isinstance(values, dict) or not isinstance(values.get("image"), str) or not values["image"]:
        return None
    error = values.get("error")
    if isinstance(error, str) and error:
        return FolderRecord(values["image"], error=error)
    caption, score = values.get("caption"), values.get("score")
    if isinstance(caption, str) and isinstance(score, (int, float)) and not isinstance(score, bool):
        return FolderRecord(values["image"], caption=caption, score=float(score))
    return None


def _record_from_row(row: list[str]) -> FolderRecord | None:
    if len(row) != len(CSV_COLUMNS) or not row[0]:
        return None
    image, caption, score, error = row
    if error:
        return FolderRecord(image, error=error)
    value = _parse_float(score)
    return FolderRecord(image, caption=caption, score=value) if value is not None else None


@dataclass
class _Parsed:
    records: list[FolderRecord]
    keep_bytes: int
    """Length of the valid prefix; anything after it is a torn tail to truncate."""


class ResultsFile:
    """The JSONL or CSV file ``caption-dir`` appends to; see the module docstring for its rules."""

    def __init__(self, path: str | Path, fmt: str | None = None) -> None:
        self.path = Path(path)
        self.format = format_for(self.path, fmt)
        self._file: io.BufferedWriter | None = None

    # Reading -------------------------------------------------------------------------------

    def _fail(self, where: str, problem: str) -> ResultsFileError:
        return ResultsFileError(
            f"{self.path} {where}: {problem}; it is not a {self.format} file written by "
            "caption-dir (or was edited): pass another --out"
        )

    def _parse(self, data: bytes) -> _Parsed:
        complete_end = data.rfind(b"\n") + 1  # bytes after the last newline: a cut-short write
        tail = data[complete_end:]
        # Names that are not UTF-8 (possible on Linux) were written as their raw bytes in CSV.
        text = data[:complete_end].decode("utf-8", errors="surrogateescape")
        parsed = self._parse_jsonl(text) if self.format == "jsonl" else self._parse_csv(text)
        if parsed.keep_bytes < complete_end or tail:
            dropped = data[parsed.keep_bytes:]
            if not self._looks_torn(dropped, has_records=bool(parsed.records) or parsed.keep_bytes > 0):
                raise self._fail("ends with data that is not a record", repr(dropped[:60].decode("utf-8", "replace")))
        return parsed

    def _looks_torn(self, dropped: bytes, has_records: bool) -> bool:
        """Whether bytes after the last good record can be a write cut short (ours to remove)."""
        if not dropped.strip(b"\0"):  # a crash can leave a zero-filled tail
            return True
        if has_records:
            return True  # the file is ours; only its last record failed to parse
        first = dropped.decode("utf-8", errors="replace")
        expected = _JSONL_START if self.format == "jsonl" else ",".join(CSV_COLUMNS) + "\n"
        return expected.startswith(first) or first.startswith(expected)

    def _parse_jsonl(self, text: str) -> _Parsed:
        records: list[FolderRecord] = []
        keep = 0
        lines = _lines(text)
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                keep += len(line.encode("utf-8", errors="surrogateescape"))
                continue
            try:
                record = _record_from_mapping(json.loads(line))
            except json.JSONDecodeError:
                record = None
            if record is None:
                if number == len(lines):
                    break  # a torn last record: truncated by the caller
                raise self._fail(f"line {number}", "not a caption-dir record")
            records.append(record)
            keep += len(line.encode("utf-8", errors="surrogateescape"))
        return _Parsed(records, keep)

    def _parse_csv(self, text: str) -> _Parsed:
        offsets: list[int] = []  # character offset where each consumed line ends

        def lines() -> Iterator[str]:
            position = 0
            for line in _lines(text):
                position += len(line)
                offsets.append(position)
                yield line

        reader = csv.reader(lines(), strict=True)
        records: list[FolderRecord] = []
        keep_chars = 0
        row_number = 0
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                if "unexpected end of data" in str(error):
                    break  # a quoted field cut short: the last record is torn
                raise self._fail(f"line {reader.line_num}", str(error)) from None
            row_number += 1
            last = offsets[-1] == len(text)
            if row_number == 1:
                if tuple(row) != CSV_COLUMNS:
                    if last:
                        break
                    raise self._fail("line 1", f"the header is not {','.join(CSV_COLUMNS)}")
                keep_chars = offsets[-1]
                continue
            record = _record_from_row(row)
            if record is None:
                if last:
                    break
                raise self._fail(f"line {reader.line_num}", "not a caption-dir row")
            records.append(record)
            keep_chars = offsets[-1]
        return _Parsed(records, len(text[:keep_chars].encode("utf-8", errors="surrogateescape")))

    def read(self) -> list[FolderRecord]:
        """The records already in the file (none if it does not exist), without changing it."""
        if not self.path.exists():
            return []
        return self._parse(self._read_bytes()).records

    def _read_bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except IsADirectoryError:
            raise ResultsFileError(f"--out {self.path} is a folder; pass a file name") from None
        except OSError as error:
            raise ResultsFileError(f"cannot read {self.path}: {error.strerror or error}") from None

    # Writing -------------------------------------------------------------------------------

    def open(self, retry_errors: bool = False) -> dict[str, FolderRecord]:
        """Recover the file (truncate a torn tail; drop error records when ``retry_errors``),
        open it for appending, and return the records already done by image."""
        existing = self.path.exists()
        parsed = self._parse(self._read_bytes()) if existing else _Parsed([], 0)
        done: dict[str, FolderRecord] = {}
        for record in parsed.records:
            done.setdefault(record.image, record)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if retry_errors and any(not r.ok for r in parsed.records):
                done = {image: r for image, r in done.items() if r.ok}
                self._rewrite(list(done.values()))
            elif existing:
                with self.path.open("r+b") as file:
                    if file.seek(0, os.SEEK_END) != parsed.keep_bytes:
                        file.truncate(parsed.keep_bytes)
                        file.flush()
                        os.fsync(file.fileno())
            self._file = self.path.open("ab")
            if self.format == "csv" and self._file.tell() == 0:
                self._append([self._encode_header()])
        except OSError as error:
            raise ResultsFileError(f"cannot write {self.path}: {error.strerror or error}") from None
        return done

    def _rewrite(self, records: list[FolderRecord]) -> None:
        temporary = self.path.with_name(f".{self.path.name}.rewrite")
        with temporary.open("wb") as file:
            lines = ([self._encode_header()] if self.format == "csv" else []) + [self.encode(r) for r in records]
            file.write(b"".join(lines))
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def _encode_header(self) -> bytes:
        return (",".join(CSV_COLUMNS) + "\n").encode("ascii")

    def encode(self, record: FolderRecord) -> bytes:
        """One record as the bytes of one line (CSV may quote a field over several lines)."""
        if self.format == "jsonl":
            try:
                return (json.dumps(record.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
            except UnicodeEncodeError:  # a file name that is not UTF-8: \u escapes round-trip it
                return (json.dumps(record.to_dict(), ensure_ascii=True) + "\n").encode("ascii")
        buffer = io.StringIO()
        score = "" if record.score is None else repr(record.score)
        csv.writer(buffer, lineterminator="\n").writerow(
            [record.image, record.caption or "", score, record.error or ""]
        )
        return buffer.getvalue().encode("utf-8", errors="surrogateescape")

    def write(self, records: Sequence[FolderRecord]) -> None:
        """Append records in one write, then flush and fsync so that a crash keeps them."""
        if records:
            self._append([self.encode(r) for r in records])

    def _append(self, lines: list[bytes]) -> None:
        if self._file is None:
            raise RuntimeError("ResultsFile.open() must be called before writing")
        try:
            self._file.write(b"".join(lines))
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as error:
            raise ResultsFileError(f"cannot write {self.path}: {error.strerror or error}") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Captioning ---------------------------------------------------------------------------------


def _load(path: Path) -> Image.Image | BadImageError:
    """Errors are returned, not raised, so one bad file never stops a batch."""
    try:
        return load_rgb_image(path)
    except BadImageError as error:
        return error


def _loaded_batches(
    paths: list[Path], batch_size: int, workers: int
) -> Iterator[list[Image.Image | BadImageError]]:
    """Pictures of each batch in order; with ``workers`` threads, later batches are decoded
    while the caller captions the current one (Pillow decodes without holding the GIL)."""
    chunks = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    if workers <= 0:
        for chunk in chunks:
            yield [_load(path) for path in chunk]
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="caption-dir-load")
    try:
        pending: deque[list[Future]] = deque()
        upcoming = iter(chunks)
        for chunk in upcoming:
            pending.append([pool.submit(_load, path) for path in chunk])
            if len(pending) > _PREFETCH_BATCHES:
                yield [future.result() for future in pending.popleft()]
        while pending:
            yield [future.result() for future in pending.popleft()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class FolderSummary:
    """What a ``caption_folder`` run did; ``to_dict`` is the ``--json`` summary."""

    folder: str
    out: str
    format: str
    found: int = 0
    already_done: int = 0
    captioned: int = 0
    failed: list[FolderRecord] = field(default_factory=list)
    """Images that could not be read in this run."""
    earlier_failures: list[FolderRecord] = field(default_factory=list)
    """Images recorded as errors by an earlier run and not retried."""
    unreadable_folders: list[str] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the whole run, model loading included."""
    captioning_seconds: float = 0.0
    """Wall time from the first batch's loading to the last batch written."""

    @property
    def ok(self) -> bool:
        return not (self.failed or self.earlier_failures or self.unreadable_folders)

    @property
    def images_per_second(self) -> float | None:
        done = self.captioned + len(self.failed)
        return round(done / self.captioning_seconds, 3) if done and self.captioning_seconds > 0 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "folder": self.folder,
            "out": self.out,
            "format": self.format,
            "found": self.found,
            "already_done": self.already_done,
            "captioned": self.captioned,
            "failed": [{"image": r.image, "error": r.error} for r in self.failed],
            "earlier_failures": [{"image": r.image, "error": r.error} for r in self.earlier_failures],
            "unreadable_folders": self.unreadable_folders,
            "seconds": round(self.seconds, 3),
            "captioning_seconds": round(self.captioning_seconds, 3),
            "images_per_second": self.images_per_second,
            "ok": self.ok,
        }


def caption_folder(
    captioner: Captioner | Callable[[], Captioner],
    folder: str | Path,
    out: str | Path,
    fmt: str | None = None,
    batch_size: int = 16,
    beam_size: int = 3,
    max_length: int | None = None,
    retry_errors: bool = False,
    workers: int = 1,
    progress: bool = True,
    guidance: bool | None = None,
) -> FolderSummary:
    """Caption every image under ``folder`` not yet in ``out``, appending a record per image.

    ``captioner`` may be a callable that builds one, so that nothing is loaded when every image
    is already done. ``guidance`` is passed on to ``Captioner.caption`` (None: the model's default). Raises ``CaptionerError`` for a missing folder or a results file that is
    not ours; unreadable images are recorded as errors and never raise.
    """
    if batch_size < 1:
        raise CaptionerError(f"--batch-size must be at least 1, got {batch_size}")
    folder = Path(folder)
    started = time.perf_counter()
    listing = find_images(folder)
    results = ResultsFile(out, fmt)
    summary = FolderSummary(str(folder), str(out), results.format, found=len(listing.images),
                            unreadable_folders=listing.unreadable_folders)
    with results:
        done = results.open(retry_errors=retry_errors)
        pending = [image for image in listing.images if image not in done]
        summary.already_done = len(listing.images) - len(pending)
        summary.earlier_failures = [done[i] for i in listing.images if i in done and not done[i].ok]
        if pending:
            model = captioner if hasattr(captioner, "caption") else captioner()
            captioning_started = time.perf_counter()
            try:
                _caption_pending(model, folder, pending, results, summary, batch_size, beam_size, max_length,
                                 workers, progress, guidance)
            finally:
                summary.captioning_seconds = time.perf_counter() - captioning_started
    summary.seconds = time.perf_counter() - started
    return summary


def _caption_pending(
    captioner: Captioner,
    folder: Path,
    pending: list[str],
    results: ResultsFile,
    summary: FolderSummary,
    batch_size: int,
    beam_size: int,
    max_length: int | None,
    workers: int,
    progress: bool,
    guidance: bool | None,
) -> None:
    from tqdm.auto import tqdm

    paths = [folder / image for image in pending]
    bar = tqdm(total=len(pending), desc="captioning", unit="img", disable=not progress, dynamic_ncols=True)
    # closing(): on Ctrl-C or an error the loader threads are stopped here, not at garbage collection.
    with bar, closing(_loaded_batches(paths, batch_size, workers)) as batches:
        start = 0
        for pictures in batches:
            names = pending[start : start + len(pictures)]
            start += len(pictures)
            readable = [p for p in pictures if isinstance(p, Image.Image)]
            captions = iter(
                captioner.caption(readable, beam_size=beam_size, max_length=max_length, batch_size=len(readable),
                                  guidance=guidance)
                if readable else []
            )
            records = []
            for name, picture in zip(names, pictures):
                if isinstance(picture, BadImageError):
                    records.append(FolderRecord(name, error=str(picture)))
                    continue
                result = next(captions)
                if result.ok:
                    records.append(FolderRecord(name, caption=result.caption, score=round(float(result.score), 4)))
                else:
                    error = (result.error or "").replace(result.source, str(folder / name))
                    records.append(FolderRecord(name, error=error))
            results.write(records)
            summary.captioned += sum(1 for r in records if r.ok)
            summary.failed.extend(r for r in records if not r.ok)
            bar.update(len(records))
