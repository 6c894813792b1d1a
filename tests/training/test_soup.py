"""Model soups: the weight mean, the greedy choice, and `captioner soup` on two fine-tuned runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from captioner.training.soup import greedy_soup, mean_weights


def test_mean_weights_is_the_element_wise_mean_in_the_first_ones_dtype() -> None:
    first = {"w": torch.tensor([1.0, 2.0], dtype=torch.float16), "b": torch.tensor([0.0])}
    second = {"w": torch.tensor([3.0, 6.0], dtype=torch.float16), "b": torch.tensor([1.0])}
    third = {"w": torch.tensor([2.0, 1.0], dtype=torch.float16), "b": torch.tensor([5.0])}
    mean = mean_weights([first, second, third])
    assert mean["w"].dtype == torch.float16
    assert mean["w"].tolist() == [2.0, 3.0]
    assert mean["b"].tolist() == [2.0]


def test_greedy_soup_keeps_only_runs_that_raise_the_score() -> None:
    # Score: closeness of the single weight to 1.0. Alone: a=1.4 (-0.4), b=0.5 (-0.5), c=3.0 (-2.0).
    # Greedy: a; a+b -> 0.95 (-0.05), kept; a+b+c -> 1.633 (-0.633), not kept.
    candidates = {"a": {"x": torch.tensor([1.4])}, "b": {"x": torch.tensor([0.5])}, "c": {"x": torch.tensor([3.0])}}
    labels = []

    def score(weights, label):
        labels.append(label)
        return {"CIDEr": -abs(float(weights["x"]) - 1.0)}

    result = greedy_soup(candidates, score)
    assert result.ingredients == ["a", "b"]
    assert result.metrics["CIDEr"] == pytest.approx(-0.05)
    assert float(result.weights["x"]) == pytest.approx(0.95)
    assert result.uniform["CIDEr"] == pytest.approx(-abs((1.4 + 0.5 + 3.0) / 3 - 1.0))
    assert [step.kept for step in result.steps] == [True, False]
    assert [step.added for step in result.steps] == ["b", "c"]
    assert labels[:3] == ["a", "b", "c"]


def test_a_soup_needs_two_runs() -> None:
    with pytest.raises(ValueError):
        greedy_soup({"a": {"x": torch.zeros(1)}}, lambda weights, label: {"CIDEr": 0.0})


@pytest.fixture(scope="module")
def two_fine_tuned_runs(tiny_run: Path, tiny_scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from captioner.cli import main

    runs = []
    for seed in (1, 2):
        out = tmp_path_factory.mktemp("soup") / f"seed{seed}"
        status = main([
            "train", "--config", str(tiny_run / "config.json"), "--data", str(tiny_scenes), "--out", str(out),
            "--epochs", "1", "--set", f"init_from={tiny_run}", "--set", f"seed={seed}",
            "--set", "optim.learning_rate=3e-3", "--set", "optim.warmup_steps=0", "--set", "threads=1", "--quiet",
        ])
        assert status == 0
        runs.append(out)
    return runs


def test_soup_command_writes_a_run_that_captions(two_fine_tuned_runs: list[Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from captioner.api import Captioner
    from captioner.cli import main
    from captioner.training.checkpoint import load_run

    out = tmp_path / "soup"
    status = main(["soup", *map(str, two_fine_tuned_runs), "--out", str(out), "--device", "cpu", "--json"])
    assert status == 0
    report = json.loads(capsys.readouterr().out)
    alone = {name: scores["CIDEr"] for name, scores in report["alone"].items()}
    assert set(alone) == {str(run) for run in two_fine_tuned_runs}
    # Each run alone scores what its own training validated (same data, same decoding).
    for run in two_fine_tuned_runs:
        assert alone[str(run)] == pytest.approx(load_run(run).metrics["CIDEr"], abs=1e-9)
    assert report["metrics"]["CIDEr"] >= max(alone.values())
    soup = load_run(out)
    assert soup.metrics["soup_of"] == report["ingredients"]
    assert soup.metrics["CIDEr"] == pytest.approx(report["metrics"]["CIDEr"])
    photos = sorted(Path(soup.config.data.path).glob("images/val/*.png"))[:2]
    assert len(photos) == 2
    captions = Captioner.from_pretrained(out, device="cpu").caption(photos)
    assert all(result.caption for result in captions)


def test_soup_of_runs_with_other_vocabularies_is_refused(two_fine_tuned_runs: list[Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from captioner.cli import main

    other = tmp_path / "other"
    shutil.copytree(two_fine_tuned_runs[1], other)
    vocabulary = json.loads((other / "vocab.json").read_text())
    vocabulary["tokens"][4], vocabulary["tokens"][5] = vocabulary["tokens"][5], vocabulary["tokens"][4]
    (other / "vocab.json").write_text(json.dumps(vocabulary))
    status = main(["soup", str(two_fine_tuned_runs[0]), str(other), "--out", str(tmp_path / "soup")])
    assert status == 2
    error = capsys.readouterr().err
    assert str(other / "vocab.json") in error and "same starting run" in error
    assert not (tmp_path / "soup").exists()
