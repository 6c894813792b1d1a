"""``captioner serve``: its help, and one clear line when the serve extra is missing."""

from __future__ import annotations

import sys

import pytest

from captioner.cli import main


def test_serve_help_lists_the_limits(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--checkpoint", "--host", "--port", "--max-upload-mb", "--max-queue", "--max-batch",
                   "--batch-window-ms", "--request-timeout"):
        assert option in text


def test_serve_without_fastapi_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    assert main(["serve", "--port", "0"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "pip install 'captioner[serve]'" in error


def test_the_cli_does_not_import_the_web_stack_for_help():
    import subprocess

    code = ("import sys; from captioner.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'captioner.serving') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
