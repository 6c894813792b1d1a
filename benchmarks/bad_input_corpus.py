"""Run the bad-input corpus and fuzzed inputs through every user path and count the outcomes.

Usage: .venv/bin/python benchmarks/bad_input_corpus.py [--checkpoint RUN_DIR] [--fuzz 2000] [--seed 0]

Paths: the image loader, ``captioner caption`` (all corpus files in one command),
``captioner caption-dir`` (the corpus folder, then a rerun), and dataset reading
(``load_records`` on a captions.csv naming every corpus file, then ``Captioner.evaluate``).
Fuzzing: ``--fuzz`` random and mutated image files through the loader, and ``--fuzz`` mutated
annotation files per dataset format through ``load_records``. Counts, per path: cases tried,
captioned, reported by name, crashes (any exception other than the project's one error type, or
a traceback on stderr) and lost items (a good picture not captioned, or a bad one not reported).
The corpus generator is tests/reliability/bad_inputs.py. Writes
benchmarks/results/bad_input_corpus.json; RELIABILITY.md quotes it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402
from bad_inputs import ANNOTATION_FORMATS, Case, build_corpus, encode, photo_like, unlock  # noqa: E402

from captioner.cli import main as captioner_main  # noqa: E402
from captioner.data.images import load_rgb_image, load_rgb_image_bytes  # noqa: E402
from captioner.data.readers import load_records  # noqa: E402
from captioner.errors import BadImageError, CaptionerError  # noqa: E402


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            status = captioner_main(argv)
        except BaseException as error:  # noqa: BLE001 - counting crashes is the point
            status = -1
            stderr.write(f"Traceback (escaped): {type(error).__name__}: {error}\n")
    return status, stdout.getvalue(), stderr.getvalue()


def tally(cases: list[Case], captioned: set[str], reported: set[str], crashes: int) -> dict:
    good = {c.path for c in cases if c.readable}
    bad = {c.path for c in cases if not c.readable}
    return {
        "tried": len(cases),
        "captioned": len(captioned & good),
        "reported_by_name": len(reported & bad),
        "crashes": crashes,
        "lost": len(good - captioned) + len(bad - reported),
        "wrong": len(captioned & bad) + len(reported & good),
    }


def loader_path(root: Path, cases: list[Case]) -> dict:
    captioned, reported, crashes = set(), set(), 0
    for case in cases:
        try:
            load_rgb_image(root / case.path)
            captioned.add(case.path)
        except BadImageError as error:
            if Path(case.path).name in str(error):
                reported.add(case.path)
        except Exception:  # noqa: BLE001
            crashes += 1
    return tally(cases, captioned, reported, crashes)


def caption_path(root: Path, cases: list[Case], checkpoint: list[str]) -> dict:
    paths = {str(root / c.path): c.path for c in cases}
    status, out, err = run_cli(["caption", *paths, *checkpoint, "--batch-size", "32"])
    captioned = {paths[line.split("\t")[0]] for line in out.splitlines() if line.split("\t")[0] in paths}
    reported = {relative for full, relative in paths.items()
                if any(full in line for line in err.splitlines() if line.startswith("captioner: skipped"))}
    result = tally(cases, captioned, reported, int("Traceback" in err or status not in (0, 1)))
    result["exit_status"] = status
    return result


def caption_dir_path(root: Path, cases: list[Case], checkpoint: list[str], work: Path) -> dict:
    listed = [c for c in cases if c.listed]
    out = work / "captions.jsonl"
    command = ["caption-dir", str(root), "--out", str(out), *checkpoint, "--json", "--no-progress"]
    status, _, err = run_cli(command)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    captioned = {r["image"] for r in records if "caption" in r}
    reported = {r["image"] for r in records if "error" in r and Path(r["image"]).name in r["error"]}
    crashes = int("Traceback" in err or status not in (0, 1))
    before = out.read_bytes() if out.exists() else b""
    rerun_status, rerun_out, rerun_err = run_cli(command)
    rerun = json.loads(rerun_out) if rerun_out.strip() else {}
    result = tally(listed, captioned, reported, crashes + int("Traceback" in rerun_err))
    result.update({
        "exit_status": status,
        "records_written": len(records),
        "duplicate_records": len(records) - len({r["image"] for r in records}),
        "rerun_redid": rerun.get("captioned", -1) + len(rerun.get("failed", [])),
        "rerun_changed_file": out.read_bytes() != before,
        "rerun_exit_status": rerun_status,
    })
    return result


def dataset_path(root: Path, cases: list[Case], checkpoint: str | None) -> dict:
    from captioner.api import Captioner

    table = root / "captions.csv"
    with table.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "caption"])
        for case in cases:
            writer.writerow([case.path, "a picture"])
    try:
        records = load_records(root)
        evaluation = Captioner.from_pretrained(checkpoint).evaluate(root, split="train", meteor=False, progress=False)
    except Exception as error:  # noqa: BLE001
        return {"tried": len(cases), "crashes": 1, "error": f"{type(error).__name__}: {error}"}
    finally:
        table.unlink()
    captioned = {str(p.record.image_id) for p in evaluation.predictions}
    reported = {c.path for c in cases if any(str(root / c.path) in line for line in evaluation.skipped)}
    result = tally(cases, captioned, reported, 0)
    result["records_read"] = len(records)
    return result


def mutate(data: bytes, rng: random.Random, alphabet: bytes | None = None) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        position = rng.randrange(max(len(out), 1))
        operation = rng.choice(("set", "insert", "delete", "cut"))
        if operation == "set" and out:
            out[position] = rng.randrange(256)
        elif operation == "insert":
            out[position:position] = bytes([rng.choice(alphabet)]) if alphabet else rng.randbytes(rng.randint(1, 8))
        elif operation == "delete" and out:
            del out[position]
        elif operation == "cut":
            out = out[:position]
    return bytes(out)


def fuzz_images(count: int, rng: random.Random) -> dict:
    photo = photo_like(40, 30, seed=5)
    seeds = [encode(photo, "JPEG", quality=80), encode(photo, "JPEG", progressive=True), encode(photo, "PNG"),
             encode(photo.convert("P"), "PNG", transparency=0), encode(photo, "GIF"), encode(photo, "WEBP")]
    outcomes: Counter[str] = Counter()
    for index in range(count):
        data = rng.randbytes(rng.randint(0, 4096)) if index % 4 == 0 else mutate(rng.choice(seeds), rng)
        try:
            load_rgb_image_bytes(data, "fuzzed.jpg")
            outcomes["loaded"] += 1
        except BadImageError as error:
            outcomes["reported" if "fuzzed.jpg" in str(error) else "unnamed"] += 1
        except Exception:  # noqa: BLE001
            outcomes["crashes"] += 1
    return {"tried": count, **outcomes}


def fuzz_annotations(count: int, rng: random.Random, work: Path) -> dict:
    results = {}
    logging.getLogger("captioner.data").setLevel(logging.ERROR)
    for name, (write, original) in ANNOTATION_FORMATS.items():
        outcomes: Counter[str] = Counter()
        for index in range(count):
            folder = work / f"{name}_{index}"
            dataset = write(folder, mutate(original, rng, alphabet=b'",\t#\n{}[]\\\xff\x00:0'))
            try:
                load_records(dataset)
                outcomes["records"] += 1
            except CaptionerError as error:
                outcomes["clear_error" if str(dataset) in str(error) and "\n" not in str(error) else "unclear_error"] += 1
            except Exception:  # noqa: BLE001
                outcomes["crashes"] += 1
            shutil.rmtree(folder)
        results[name] = {"tried": count, **outcomes}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--fuzz", type=int, default=2000, help="fuzzed inputs per kind (default: 2000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bad_input_corpus.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    started = time.perf_counter()
    checkpoint = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    report: dict = {"machine": describe_machine(), "checkpoint": args.checkpoint or "shipped flickr8k-lite0"}
    with tempfile.TemporaryDirectory(prefix="bad_inputs_") as temporary:
        work = Path(temporary)
        root = work / "photos"
        cases = build_corpus(root)
        try:
            report["corpus"] = {"cases": len(cases), "readable": sum(c.readable for c in cases),
                                "bad": sum(not c.readable for c in cases),
                                "kinds": dict(Counter(c.kind for c in cases))}
            report["loader"] = loader_path(root, cases)
            report["caption"] = caption_path(root, cases, checkpoint)
            report["caption_dir"] = caption_dir_path(root, cases, checkpoint, work)
            report["dataset"] = dataset_path(root, cases, args.checkpoint)
        finally:
            unlock(root)
        rng = random.Random(args.seed)
        report["fuzz_image_bytes"] = fuzz_images(args.fuzz, rng)
        report["fuzz_annotations"] = fuzz_annotations(args.fuzz // 4, rng, work)
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "corpus"}, indent=2, ensure_ascii=False))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
