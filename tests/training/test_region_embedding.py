"""A decoder that embeds its regions first (``decoder.region_dim``), end to end: cross-entropy,
self-critical training from it, an int8 ensemble with a plain decoder, and captioning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_TRAINING
from tests.training.test_pipeline import SMALL, write_recipes


@pytest.mark.slow
def test_a_recipe_of_region_embedding_decoders_trains_joins_and_captions(
    tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captioner.cli import main
    from captioner.training.checkpoint import load_run

    write_recipes(tmp_path)
    pipeline, out = tmp_path / "embedded.json", tmp_path / "out"
    embedded = {"decoder.region_dim": 24}
    pipeline.write_text(json.dumps({"parallel": 2, "stages": [
        {"name": "forced", "recipe": "first.json", "set": embedded},
        {"name": "critical", "recipe": "second.json", "init_from": "forced", "set": embedded},
        {"name": "plain", "recipe": "first.json", "set": {"seed": 1}},
        {"name": "ensemble", "ensemble": ["critical", "plain"], "int8": True, "set": {"eval.mirror_weight": 0.5}},
    ]}))  # fmt: skip
    command = ["train", "--config", str(pipeline), "--data", str(tiny_scenes), "--out", str(out),
               "--epochs", "1", *TINY_TRAINING, *SMALL]  # fmt: skip
    assert main(command) == 0
    capsys.readouterr()

    critical = load_run(out / "critical")
    assert critical.config.decoder.region_dim == 24
    assert tuple(critical.weights["decoder.region_embedding.weight"].shape) == (24, 1280)  # EfficientNet-Lite0: 1,280-d regions
    assert "decoder.region_embedding.weight" not in load_run(out / "plain").weights
    scores = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert scores["from"] == "photos" and 0 <= scores["CIDEr"]

    image = next((tiny_scenes / "images").rglob("*.png"))
    for checkpoint in (out / "critical", out):  # the run alone, and the int8 ensemble
        assert main(["caption", str(image), "--checkpoint", str(checkpoint), "--json", "--beam-size", "3"]) == 0
        caption = json.loads(capsys.readouterr().out)[0]
        # One epoch of these tiny decoders may write nothing yet; the search must still end.
        assert caption["caption"] == " ".join(caption["words"]) and caption["score"] < 0


def test_starting_from_a_run_with_other_decoder_sizes_names_the_settings_to_copy(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captioner.cli import main

    status = main(["train", "--config", str(tiny_run / "config.json"), "--out", str(tmp_path / "next"),
                   "--set", f"init_from={tiny_run}", "--set", "decoder.region_dim=8", "--epochs", "1"])  # fmt: skip
    assert status != 0
    error = capsys.readouterr().err
    assert f"init_from {tiny_run} has a decoder of other sizes: set decoder.region_dim=0" in error
