"""Guidance through the Captioner API and ``captioner caption`` with the shipped model, on photos
from examples/out_of_domain; and its absence for encoders without a classifier."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from captioner.api import Captioner
from captioner.cli import main
from captioner.training.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]
OOD = ROOT / "examples" / "out_of_domain"
SPECIAL = {"<unk>", "<pad>", "<start>", "<end>"}


@pytest.fixture(scope="module")
def shipped() -> Captioner:
    torch.set_num_threads(2)
    return Captioner.from_pretrained(device="cpu")


def test_guided_captions_name_the_classified_object_and_carry_labels(shipped):
    cat, koala = shipped.caption([OOD / "cat_tabby_closeup.jpg", OOD / "koala.jpg"])
    assert cat.guided_by == "cat" and "cat" in cat.words, cat.caption
    assert cat.labels[0].word == "cat" and cat.labels[0].confidence > 0.5 and len(cat.labels) == 5
    # "koala" is not in the model's vocabulary: decoded as "animal(s)", written as "koala(s)".
    assert "koala" not in shipped.vocabulary and koala.guided_by == "koala"
    named = [i for i, word in enumerate(koala.words) if word in ("koala", "koalas")]
    assert named and named[0] < 5, koala.caption
    for result in (cat, koala):
        assert not SPECIAL & set(result.words)
        assert result.caption == " ".join(result.words)
        assert result.attention.shape == (len(result.words), 7, 7)


def test_guidance_can_be_switched_off_and_labels_are_still_returned(shipped):
    (plain,) = shipped.caption(OOD / "koala.jpg", guidance=False)
    assert plain.guided_by is None and "koala" not in plain.words
    assert plain.labels[0].label == "koala"
    values = plain.to_dict()
    assert values["guided_by"] is None
    assert values["labels"][0] == {"label": "koala", "word": "koala", "confidence": pytest.approx(0.87, abs=0.02)}


def test_caption_command_json_and_no_guidance_flag(capsys):
    photo = str(OOD / "coffee_cup.jpg")
    assert main(["caption", photo, "--json"]) == 0
    (guided,) = json.loads(capsys.readouterr().out)
    assert guided["guided_by"] == "coffee" and "coffee" in guided["words"]
    assert guided["labels"][0]["label"] == "espresso" and guided["labels"][0]["word"] == "coffee"
    assert main(["caption", photo, "--json", "--no-guidance"]) == 0
    (plain,) = json.loads(capsys.readouterr().out)
    assert plain["guided_by"] is None and plain["labels"] == guided["labels"]
    assert plain["caption"] != guided["caption"]


def test_configs_written_before_guidance_existed_still_load_with_it_on():
    values = RunConfig().to_dict()
    for name in ("guidance", "guidance_threshold", "guidance_trust", "guidance_margin"):
        del values["eval"][name]
    config = RunConfig.from_dict(values)
    assert config.eval.guidance is True
    assert (config.eval.guidance_threshold, config.eval.guidance_trust, config.eval.guidance_margin) == (0.2, 0.6, 4.5)
    values["eval"]["guidance_margin"] = None  # as the configs of the first guided models say
    assert RunConfig.from_dict(values).eval.guidance_margin is None


@pytest.mark.slow
def test_an_encoder_without_a_classifier_captions_without_labels(tiny_run, tiny_scenes):
    captioner = Captioner.from_pretrained(tiny_run)
    assert captioner.guide is None
    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    (result,) = captioner.caption(image)
    assert result.ok and result.labels == [] and result.guided_by is None
    assert result.to_dict()["labels"] == []
