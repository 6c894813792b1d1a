"""The bad-input corpus, written once per test session (see bad_inputs.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_inputs import Case, build_corpus, unlock  # noqa: E402


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Case]]:
    root = tmp_path_factory.mktemp("bad_inputs") / "photos"
    cases = build_corpus(root)
    yield root, cases
    unlock(root)


@pytest.fixture(scope="session")
def tiny_captioner(tiny_run: Path):
    from captioner.api import Captioner

    return Captioner.from_pretrained(tiny_run, device="cpu")
