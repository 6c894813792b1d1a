"""Shared fixtures for encoder tests: the pretrained lite0 (built once) and the test photos."""

from __future__ import annotations

from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parent / "assets"


@pytest.fixture(scope="session")
def lite0():
    from captioner.encoders import EncoderConfig, build_encoder

    return build_encoder(EncoderConfig("efficientnet_lite0"))


@pytest.fixture(scope="session")
def photo_paths() -> dict[str, Path]:
    return {"chelsea": ASSETS / "chelsea.jpg", "coffee": ASSETS / "coffee.jpg"}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch, tmp_path_factory):
    """Point the torch hub cache at an empty folder and make any download attempt fail loudly."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
