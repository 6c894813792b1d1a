"""The CLI as a user runs it: train on scenes, caption files (good and bad), evaluate, resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from captioner.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import TINY_TRAINING  # noqa: E402

CAPTIONER = Path(sys.executable).with_name("captioner")


def test_training_writes_a_self_contained_run_directory(tiny_run: Path):
    for name in ("model.safetensors", "config.json", "vocab.json", "metrics.json", "history.jsonl"):
        assert (tiny_run / name).is_file(), name
    assert (tiny_run / "tensorboard").is_dir()
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"BLEU-4", "CIDEr", "ROUGE-L", "epoch"} <= set(metrics)
    assert not list(tiny_run.rglob("*.pt")) and not list(tiny_run.rglob("*.pkl"))


def test_caption_command_captions_good_files_and_reports_bad_ones(tiny_run, tiny_scenes, tmp_path, capsys):
    images = sorted((tiny_scenes / "images" / "test").glob("*.png"))[:2]
    broken = tmp_path / "broken photo.jpg"
    broken.write_text("this is not a picture")
    status = main(["caption", str(images[0]), str(broken), str(images[1]), "--checkpoint", str(tiny_run),
                   "--attention-dir", str(tmp_path / "figures")])
    out, err = capsys.readouterr()
    assert status == 1
    lines = out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(images[0]), str(images[1])]
    assert all(line.split("\t")[1] for line in lines)
    assert "broken photo.jpg" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(f"{p.stem}_attention.png" for p in images)


def test_caption_json_output_has_attention_for_every_word(tiny_run, tiny_scenes, capsys):
    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    assert main(["caption", str(image), "--checkpoint", str(tiny_run), "--json", "--with-attention"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    attention = np.array(result["attention"])
    assert attention.shape == (len(result["words"]), 8, 8)
    np.testing.assert_allclose(attention.sum(axis=(1, 2)), 1.0, atol=1e-3)
    assert result["caption"] == " ".join(result["words"])
    assert "<unk>" not in result["words"]


def test_python_api_matches_the_cli(tiny_run, tiny_scenes):
    from captioner.api import Captioner

    captioner = Captioner.from_pretrained(tiny_run)
    image = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    (from_path,) = captioner.caption(image)
    (from_bytes,) = captioner.caption(image.read_bytes())
    assert from_path.caption == from_bytes.caption and from_path.ok
    assert from_path.image_size == (64, 64)
    (bad,) = captioner.caption(b"\x89PNG truncated")
    assert not bad.ok and bad.caption is None and "<image 0>" in bad.error


def test_evaluate_prints_metrics_and_writes_coco_results(tiny_run, tiny_scenes, tmp_path, capsys):
    results = tmp_path / "results.json"
    status = main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(tiny_scenes), "--split", "test",
                   "--results", str(results), "--json", "--no-meteor", "--quiet"])
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 40
    assert set(summary["metrics"]) >= {"BLEU-1", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "grounded_precision"}
    assert summary["metrics"]["METEOR"] is None  # asked to skip: reported as absent, never 0
    written = json.loads(results.read_text())
    assert len(written) == 40 and set(written[0]) == {"image_id", "caption"}


def test_score_command_agrees_with_evaluate(tiny_run, tiny_scenes, tmp_path, capsys):
    results = tmp_path / "results.json"
    main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(tiny_scenes), "--split", "test",
          "--results", str(results), "--json", "--no-meteor", "--quiet"])
    evaluated = json.loads(capsys.readouterr().out)["metrics"]
    references = tiny_scenes / "annotations" / "captions_test.json"
    assert main(["score", "--references", str(references), "--results", str(results), "--json", "--no-meteor"]) == 0
    scored = json.loads(capsys.readouterr().out)
    for name in ("BLEU-4", "ROUGE-L", "CIDEr"):
        assert scored[name] == pytest.approx(evaluated[name], abs=1e-9)


def test_missing_checkpoint_is_one_line_without_traceback(tmp_path):
    process = subprocess.run(
        [str(CAPTIONER), "caption", "x.jpg", "--checkpoint", str(tmp_path / "no_such_run")],
        capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_run" in lines[0]


def test_resume_continues_from_the_last_epoch(tiny_scenes, tmp_path):
    run_dir = tmp_path / "resumable"
    common = ["train", "--config", "scenes_small_cnn", "--data", str(tiny_scenes), "--out", str(run_dir), *TINY_TRAINING]
    assert main([*common, "--epochs", "1"]) == 0
    # Resuming with a different number of epochs is a different run: refused with a clear line.
    assert main([*common, "--epochs", "2", "--resume"]) == 2
    config = json.loads((run_dir / "config.json").read_text())
    config["optim"]["epochs"] = 2
    (run_dir / "config.json").write_text(json.dumps(config))
    assert main(["train", "--out", str(run_dir), "--resume", "--quiet"]) == 0
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in history] == [1, 2]


def test_evaluate_skips_an_unreadable_image_and_scores_the_rest(tiny_run, tiny_scenes, tmp_path, capsys):
    import shutil

    data = tmp_path / "scenes"
    shutil.copytree(tiny_scenes, data)
    broken = sorted((data / "images" / "test").glob("*.png"))[0]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated PNG
    status = main(["evaluate", "--checkpoint", str(tiny_run), "--data", str(data), "--split", "test",
                   "--results", str(tmp_path / "r.json"), "--json", "--no-meteor", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0
    summary = json.loads(captured.out)
    assert summary["images"] == 39 and summary["skipped"] == 1
    assert len(json.loads((tmp_path / "r.json").read_text())) == 39


def test_python_api_takes_pil_images_in_any_mode(tiny_run, tiny_scenes):
    from PIL import Image

    from captioner.api import Captioner

    captioner = Captioner.from_pretrained(tiny_run)
    path = sorted((tiny_scenes / "images" / "test").glob("*.png"))[0]
    (from_path,) = captioner.caption(path)
    picture = Image.open(path).convert("RGB")
    results = captioner.caption([picture, picture.convert("CMYK"), picture.convert("RGBA")])
    assert all(r.ok for r in results), [r.error for r in results]
    assert results[0].caption == from_path.caption and results[2].caption == from_path.caption
    assert [r.source for r in results] == ["<image 0>", "<image 1>", "<image 2>"]


def test_evaluate_no_guidance_scores_the_decoder_alone(tmp_path, capsys):
    # A two-photo folder dataset with the shipped model: the cat close-up is captioned "cat" only
    # with the classifier's guidance (the Flickr8k decoder alone calls it a dog).
    import shutil

    photos = Path(__file__).parents[2] / "examples" / "out_of_domain"
    data = tmp_path / "ood"
    data.mkdir()
    for name in ("cat_tabby_closeup.jpg", "coffee_cup.jpg"):
        shutil.copy(photos / name, data / name)
    (data / "captions.csv").write_text(
        "image,caption,split\ncat_tabby_closeup.jpg,a tabby cat,test\ncoffee_cup.jpg,a cup of coffee,test\n"
    )
    captions = {}
    for flag in ([], ["--no-guidance"]):
        results = tmp_path / f"results{len(flag)}.json"
        assert main(["evaluate", "--data", str(data), "--no-meteor", "--json", "--quiet",
                     "--results", str(results), *flag]) == 0
        assert json.loads(capsys.readouterr().out)["guidance"] is (not flag)
        captions[bool(flag)] = {r["image_id"]: r["caption"] for r in json.loads(results.read_text())}
    guided, plain = captions[False], captions[True]
    cat = next(key for key in guided if "cat_tabby" in str(key))
    assert "cat" in guided[cat].split()
    assert "cat" not in plain[cat].split()
