"""METEOR 1.5, by running the jar that pycocoevalcap ships (the only metric that needs Java).

There is no faithful Python port of METEOR 1.5 (its paraphrase tables and tuned parameters live
in the jar), so this module drives ``meteor-1.5.jar -stdio -l en -norm`` exactly as pycocoevalcap
does: one ``SCORE`` line per image (references then the hypothesis, the hypothesis stripped of
``|||``), then one ``EVAL`` line whose answer is the per-image scores and the corpus score.
Differences from pycocoevalcap's wrapper are operational only: the SCORE lines are written by a
thread while the answers are read (no line-by-line round trips), stderr goes to a temporary file
(a chatty JVM cannot block the pipe), and the process is closed deterministically.

METEOR is available only when ``java`` is on PATH and pycocoevalcap (with its jar) is installed;
:func:`meteor_unavailable_reason` says why not. Knows nothing about tokenization or models.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

from captioner.errors import CaptionerError
from captioner.metrics._ngrams import check_inputs

_JAR_NAME = "meteor-1.5.jar"
_PARAPHRASES = Path("data") / "paraphrase-en.gz"


class MeteorError(CaptionerError):
    """METEOR was requested but cannot run (no Java, no pycocoevalcap, or the JVM failed)."""


def meteor_jar() -> Path | None:
    """The jar that pycocoevalcap ships, or None when pycocoevalcap is not installed."""
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(next(iter(spec.submodule_search_locations))) / "meteor" / _JAR_NAME
    return jar if jar.is_file() else None


def meteor_unavailable_reason() -> str | None:
    """None when METEOR can run here; otherwise a one-line reason and the fix."""
    if shutil.which("java") is None:
        return "METEOR needs Java: install a JRE (java on PATH) or score without METEOR"
    jar = meteor_jar()
    if jar is None:
        return ("METEOR needs the jar shipped with pycocoevalcap: "
                "pip install 'captioner[meteor]' (pycocoevalcap==1.2)")
    if not (jar.parent / _PARAPHRASES).is_file():
        table = jar.parent / _PARAPHRASES
        return f"METEOR paraphrase table {table} is missing; reinstall pycocoevalcap"
    return None


class Meteor:
    """A running METEOR 1.5 process; use as a context manager or call :meth:`close`."""

    def __init__(self, max_memory: str = "2G", timeout_s: float = 600.0) -> None:
        reason = meteor_unavailable_reason()
        if reason is not None:
            raise MeteorError(reason)
        jar = meteor_jar()
        assert jar is not None
        self._timeout_s = timeout_s
        self._stderr = tempfile.TemporaryFile()
        command = [shutil.which("java") or "java", "-jar", f"-Xmx{max_memory}", jar.name,
                   "-", "-", "-stdio", "-l", "en", "-norm"]
        self._process: subprocess.Popen[bytes] | None = subprocess.Popen(
            command, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lock = threading.Lock()

    def compute_score(
        self, gts: Mapping[Hashable, Sequence[str]], res: Mapping[Hashable, Sequence[str]]
    ) -> tuple[float, list[float]]:
        """(corpus METEOR, per-image METEOR in ``gts`` order), as pycocoevalcap's ``Meteor``."""
        keys = check_inputs(gts, res)
        if not keys:
            raise ValueError("METEOR needs at least one image")
        score_lines = [_score_line(res[key][0], gts[key]) for key in keys]
        with self._lock:
            statistics = self._exchange(score_lines, len(score_lines))
            answers = self._exchange(["EVAL ||| " + " ||| ".join(statistics)], len(keys) + 1)
        try:
            values = [float(answer) for answer in answers]
        except ValueError:
            raise MeteorError(f"METEOR answered {answers[:2]!r}...; {self._stderr_tail()}") from None
        return values[-1], values[:-1]

    def method(self) -> str:
        return "METEOR"

    def _exchange(self, lines: list[str], expected: int) -> list[str]:
        process = self._process
        if process is None or process.poll() is not None:
            raise MeteorError(f"the METEOR process is not running; {self._stderr_tail()}")
        assert process.stdin is not None and process.stdout is not None
        stdin, stdout = process.stdin, process.stdout
        payload = "".join(line + "\n" for line in lines).encode("utf-8")
        failure: list[BaseException] = []

        def write() -> None:
            try:
                stdin.write(payload)
                stdin.flush()
            except OSError as error:  # the JVM died; the reader below reports it
                failure.append(error)

        writer = threading.Thread(target=write, daemon=True)
        # A JVM that hangs is killed, which ends the blocking reads below with an error.
        timed_out = threading.Event()

        def kill() -> None:
            timed_out.set()
            process.kill()

        watchdog = threading.Timer(self._timeout_s, kill)
        writer.start()
        watchdog.start()
        answers = []
        try:
            for _ in range(expected):
                line = stdout.readline()
                if not line:
                    break
                answers.append(line.decode("utf-8").strip())
            writer.join(timeout=self._timeout_s)
        finally:
            watchdog.cancel()
        if len(answers) != expected or failure:
            message = f"METEOR stopped after {len(answers)} of {expected} answers; "
            if timed_out.is_set():
                message += f"killed after {self._timeout_s:g} s without an answer"
            else:
                message += self._stderr_tail()
            self.close()
            raise MeteorError(message)
        return answers

    def _stderr_tail(self) -> str:
        if self._stderr.closed:
            return "it was closed after an earlier failure"
        self._stderr.seek(0)
        text = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        return f"java said: {text[-1]}" if text else "java printed nothing"

    def close(self) -> None:
        """Stop the JVM (idempotent)."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except OSError:
                    pass
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()

    def __enter__(self) -> Meteor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_process", None) is not None:
            self.close()


def _score_line(hypothesis: str, references: Sequence[str]) -> str:
    # Same cleaning as pycocoevalcap: only the hypothesis loses "|||" and double spaces.
    hypothesis = hypothesis.replace("|||", "").replace("  ", " ")
    return " ||| ".join(("SCORE", " ||| ".join(references), hypothesis))
