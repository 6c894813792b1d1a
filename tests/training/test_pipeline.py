"""Recipes of several stages (one command: features, cross-entropy, self-critical) and the
feature cache that training builds where the recipe names one that does not exist yet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from captioner.errors import CheckpointError, ConfigError
from captioner.training.pipeline import PipelineRecipe
from tests.conftest import TINY_TRAINING

# A frozen pretrained encoder (cacheable) at 64 px, so that an epoch takes seconds.
LITE0_64 = {"name": "efficientnet_lite0", "pretrained": True, "layer": "final", "image_size": 64}
SMALL = ["--set", "eval.max_images=8", "--set", "data.captions_per_image=1", "--set", "scst.samples=3"]


def write_recipes(folder: Path) -> Path:
    """Two run recipes and the pipeline that chains them, as a user would write them."""
    base = json.loads((Path(__file__).parents[2] / "configs" / "scenes_small_cnn.json").read_text())
    base["encoder"] = LITE0_64
    base["data"]["feature_cache"] = "work/lite0_64"
    (folder / "first.json").write_text(json.dumps(base))
    base["optim"].update(objective="self_critical", learning_rate=1e-4, warmup_steps=0)
    base["init_from"] = "runs/first"  # the pipeline points it at its own first stage
    (folder / "second.json").write_text(json.dumps(base))
    pipeline = folder / "pipeline.json"
    pipeline.write_text(json.dumps({"description": "test", "stages": [
        {"name": "first", "recipe": "first.json"},
        {"name": "second", "recipe": "second.json", "init_from": "first"},
    ]}))  # fmt: skip
    return pipeline


@pytest.mark.slow
def test_one_command_caches_features_and_trains_each_stage_from_the_one_before(
    tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captioner.cli import main
    from captioner.training.checkpoint import load_run

    pipeline, out = write_recipes(tmp_path), tmp_path / "out"
    command = ["train", "--config", str(pipeline), "--data", str(tiny_scenes), "--out", str(out),
               "--epochs", "1", *TINY_TRAINING, *SMALL]  # fmt: skip
    assert main(command) == 0
    assert "model: " in capsys.readouterr().out

    cache = out / "features" / "lite0_64"
    assert (cache / "index.json").is_file()
    first, second = load_run(out / "first"), load_run(out / "second")
    assert first.config.data.feature_cache == second.config.data.feature_cache == str(cache)
    assert first.config.optim.epochs == second.config.optim.epochs == 1  # command-line flags reach every stage
    assert second.config.init_from == str(out / "first")
    assert second.config.optim.objective == "self_critical"
    history = [json.loads(line) for line in (out / "second" / "history.jsonl").read_text().splitlines()]
    # The second stage's epoch 0 scores the first stage's best weights.
    assert history[0]["epoch"] == 0
    assert history[0]["val"]["CIDEr"] == pytest.approx(first.metrics["CIDEr"], abs=1e-9)

    # The pipeline's folder loads as its last stage, in the API and from the command line.
    assert load_run(out).run_dir == out / "second"
    image = next((tiny_scenes / "images").rglob("*.png"))
    assert main(["caption", str(image), "--checkpoint", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["caption"]

    # Resuming a finished pipeline trains nothing and changes nothing.
    weights = (out / "second" / "model.safetensors").stat().st_mtime_ns
    assert main(["train", "--resume", "--out", str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["stages"]) == {"first", "second"}
    assert (out / "second" / "model.safetensors").stat().st_mtime_ns == weights


@pytest.mark.slow
def test_a_cache_built_by_training_trains_exactly_as_one_built_beforehand(tiny_scenes: Path, tmp_path: Path) -> None:
    from captioner.cli import main

    recipe = tmp_path / "first.json"
    write_recipes(tmp_path)
    common = ["train", "--config", str(recipe), "--data", str(tiny_scenes), "--epochs", "1", *TINY_TRAINING, *SMALL]
    built_first = tmp_path / "built_first"
    assert main(["features", "--data", str(tiny_scenes), "--split", "train,val", "--image-size", "64",
                 "--out", str(built_first), "--no-progress"]) == 0  # fmt: skip
    assert main([*common, "--feature-cache", str(built_first), "--out", str(tmp_path / "a")]) == 0
    assert main([*common, "--feature-cache", str(tmp_path / "built_by_training"), "--out", str(tmp_path / "b")]) == 0

    assert (tmp_path / "built_by_training" / "features.npy").read_bytes() == (built_first / "features.npy").read_bytes()
    weights_a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert weights_a == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_stages_are_checked_when_the_recipe_is_read(tmp_path: Path) -> None:
    source = tmp_path / "pipeline.json"

    def read(stages: object) -> PipelineRecipe:
        return PipelineRecipe.from_dict({"stages": stages}, source)

    with pytest.raises(ConfigError, match="init_from 'later' is not an earlier stage"):
        read([{"name": "a", "recipe": "x", "init_from": "later"}, {"name": "later", "recipe": "y"}])
    with pytest.raises(ConfigError, match="used twice"):
        read([{"name": "a", "recipe": "x"}, {"name": "a", "recipe": "y"}])
    with pytest.raises(ConfigError, match="folder name"):
        read([{"name": "../a", "recipe": "x"}])
    with pytest.raises(ConfigError, match="folder name"):
        read([{"name": "features", "recipe": "x"}])
    with pytest.raises(ConfigError, match="non-empty list"):
        read([])
    with pytest.raises(ConfigError, match="stage 1 must be an object"):
        read([{"name": "a", "recipe": "x", "epochs": 3}])
    with pytest.raises(ConfigError, match="unknown pipeline setting"):
        PipelineRecipe.from_dict({"stages": [{"name": "a", "recipe": "x"}], "seed": 1}, source)


def test_a_pipeline_whose_last_stage_has_not_finished_does_not_load(tmp_path: Path) -> None:
    from captioner.training.checkpoint import load_run

    (tmp_path / "pipeline.json").write_text(json.dumps({"final": "second", "finished": {"first": {}}}))
    with pytest.raises(CheckpointError, match=r"last stage \(second\) has not finished.*--resume"):
        load_run(tmp_path)


def test_training_never_writes_a_cache_into_a_folder_that_holds_something_else(tiny_scenes: Path, tmp_path: Path) -> None:
    import torch

    from captioner.training.config import RunConfig
    from captioner.training.loop import ensure_feature_caches, prepare_data

    folder = tmp_path / "my_photos"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    config = RunConfig.from_dict({"data": {"path": str(tiny_scenes), "feature_cache": str(folder)}})
    ensure_feature_caches(config, encoder=None, device=torch.device("cpu"), distributed=False, progress=False)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    with pytest.raises(CheckpointError, match="is not a feature cache"):
        prepare_data(config, None, None)


def test_several_processes_ask_for_the_cache_to_be_built_first(tmp_path: Path) -> None:
    import torch

    from captioner.training.config import RunConfig
    from captioner.training.loop import ensure_feature_caches

    config = RunConfig.from_dict({"data": {"path": "data/f8k", "feature_cache": str(tmp_path / "absent")}})
    with pytest.raises(ConfigError, match=r"does not exist yet; build it once with `captioner features --data data/f8k"):
        ensure_feature_caches(config, encoder=None, device=torch.device("cpu"), distributed=True, progress=False)


def test_resuming_from_a_damaged_pipeline_state_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from captioner.cli import main

    (tmp_path / "pipeline.json").write_text(json.dumps({"final": "second"}))
    assert main(["train", "--resume", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0
    assert "pipeline.json is not the state of a recipe of several stages" in error


def test_soup_and_ensemble_stages_are_checked_when_the_recipe_is_read(tmp_path: Path) -> None:
    source = tmp_path / "pipeline.json"
    runs = [{"name": "a", "recipe": "x"}, {"name": "b", "recipe": "x", "set": {"seed": 1}}]

    def read(*stages: object) -> PipelineRecipe:
        return PipelineRecipe.from_dict({"stages": [*runs, *stages]}, source)

    with pytest.raises(ConfigError, match=r"stage 3 \(s\): soup 'c' is not an earlier stage"):
        read({"name": "s", "soup": ["a", "c"]})
    with pytest.raises(ConfigError, match="\"soup\" must be a list of at least 2"):
        read({"name": "s", "soup": ["a"]})
    with pytest.raises(ConfigError, match="names a stage twice"):
        read({"name": "s", "soup": ["a", "a"]})
    with pytest.raises(ConfigError, match="'e' is an ensemble; name the runs it is made of"):
        read({"name": "e", "ensemble": ["a", "b"]}, {"name": "f", "ensemble": ["e", "a"]})
    with pytest.raises(ConfigError, match="init_from 'e' is an ensemble"):
        read({"name": "e", "ensemble": ["a", "b"]}, {"name": "c", "recipe": "x", "init_from": "e"})
    with pytest.raises(ConfigError, match=r"eval\.\* settings only"):
        read({"name": "e", "ensemble": ["a", "b"], "set": {"optim.epochs": 3}})
    with pytest.raises(ConfigError, match="one positive number per member"):
        read({"name": "e", "ensemble": ["a", "b"], "weights": [1]})
    with pytest.raises(ConfigError, match="one positive number per member"):
        read({"name": "e", "ensemble": ["a", "b"], "weights": [1, 0]})
    with pytest.raises(ConfigError, match="\"int8\" must be true or false"):
        read({"name": "e", "ensemble": ["a", "b"], "int8": "yes"})
    with pytest.raises(ConfigError, match="must be an object with \"name\" and one of"):
        read({"name": "s", "soup": ["a", "b"], "recipe": "x"})  # two kinds at once
    with pytest.raises(ConfigError, match="must be an object with \"name\" and one of"):
        read({"name": "s", "soup": ["a", "b"], "init_from": "a"})
    with pytest.raises(ConfigError, match="\"set\" must map settings"):
        read({"name": "c", "recipe": "x", "set": ["seed=1"]})

    recipe = read({"name": "s", "soup": ["a", "b"]},
                  {"name": "e", "ensemble": ["s", "a"], "weights": [2, 1], "int8": True, "set": {"eval.mirror_weight": 0.5}})
    assert [stage.kind for stage in recipe.stages] == ["train", "train", "soup", "ensemble"]
    # What pipeline.json records reads back as the same recipe (--resume compares them).
    assert PipelineRecipe.from_dict(recipe.to_dict(), source) == recipe


@pytest.mark.slow
def test_one_command_trains_runs_soups_them_and_joins_them_in_an_ensemble(
    tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captioner.cli import main
    from captioner.training.checkpoint import load_run

    write_recipes(tmp_path)
    pipeline, out = tmp_path / "joined.json", tmp_path / "out"
    pipeline.write_text(json.dumps({"stages": [
        {"name": "seed0", "recipe": "first.json"},
        {"name": "seed1", "recipe": "first.json", "set": {"seed": 1, "optim.learning_rate": 2e-3}},
        {"name": "soup", "soup": ["seed0", "seed1"]},
        {"name": "ensemble", "ensemble": ["soup", "seed0"], "weights": [2, 1], "int8": True,
         "set": {"eval.mirror_weight": 0.5}},
    ]}))  # fmt: skip
    command = ["train", "--config", str(pipeline), "--data", str(tiny_scenes), "--out", str(out),
               "--epochs", "1", *TINY_TRAINING, *SMALL]  # fmt: skip
    assert main(command) == 0
    printed = capsys.readouterr()
    assert "stage soup: soup of seed0, seed1" in printed.err
    assert "ensemble: ensemble in" in printed.out

    seed0, seed1 = load_run(out / "seed0"), load_run(out / "seed1")
    # A stage's own settings reach its config; the command line's reach every stage.
    assert (seed0.config.seed, seed1.config.seed) == (0, 1)
    assert seed1.config.optim.learning_rate == 2e-3
    assert seed0.config.optim.epochs == seed1.config.optim.epochs == 1
    assert seed0.config.data.feature_cache == seed1.config.data.feature_cache == str(out / "features" / "lite0_64")

    state = json.loads((out / "pipeline.json").read_text())
    assert [state["finished"][n]["kind"] for n in ("seed0", "seed1", "soup", "ensemble")] == [
        "train", "train", "soup", "ensemble"]  # fmt: skip
    soup_metrics = load_run(out / "soup").metrics
    assert soup_metrics["soup_of"][0] in (str(out / "seed0"), str(out / "seed1"))
    assert state["finished"]["soup"]["best"]["CIDEr"] == pytest.approx(soup_metrics["CIDEr"])

    manifest = json.loads((out / "ensemble" / "ensemble.json").read_text())
    assert [m["weight"] for m in manifest["members"]] == [2.0, 1.0]
    assert [m["source"] for m in manifest["members"]] == [str(out / "soup"), str(out / "seed0")]
    assert manifest["eval"] == {"mirror_weight": 0.5}
    # The ensemble is scored from the photos of the validation split, as `captioner evaluate` scores.
    scores = json.loads((out / "ensemble" / "metrics.json").read_text())
    assert scores["from"] == "photos" and scores["images"] == 8 and 0 <= scores["CIDEr"]
    assert state["finished"]["ensemble"]["best"] == scores

    # The output folder captions as its last stage, the ensemble.
    image = next((tiny_scenes / "images").rglob("*.png"))
    assert main(["caption", str(image), "--checkpoint", str(out), "--json", "--attention-dir", str(tmp_path / "att")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["caption"]
    with pytest.raises(CheckpointError, match="is an ensemble of runs"):
        load_run(out)

    # Resuming the finished recipe redoes nothing.
    made = (out / "ensemble" / "ensemble.json").stat().st_mtime_ns
    assert main(["train", "--resume", "--out", str(out), "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)["stages"]) == {"seed0", "seed1", "soup", "ensemble"}
    assert (out / "ensemble" / "ensemble.json").stat().st_mtime_ns == made


def test_a_mistyped_setting_of_a_later_stage_fails_before_the_first_stage_trains(
    tiny_scenes: Path, tmp_path: Path
) -> None:
    from captioner.training.pipeline import run_pipeline

    write_recipes(tmp_path)
    for later in ({"name": "b", "recipe": "first.json", "set": {"optim.epochz": 3}},
                  {"name": "b", "ensemble": ["a"], "set": {"eval.mirror_wieght": 0.5}}):
        recipe = PipelineRecipe.from_dict({"stages": [{"name": "a", "recipe": "first.json"}, later]},
                                          tmp_path / "pipeline.json")
        out = tmp_path / f"out_{later['name']}_{len(later)}"
        with pytest.raises(ConfigError, match="epochz|mirror_wieght"):
            run_pipeline(recipe, out, [f"data.path={tiny_scenes}"], progress=False)
        assert not (out / "a").exists()


def joined_recipe(folder: Path, parallel: int | None = None) -> Path:
    """Two training stages on one feature cache, their soup, and an ensemble of the soup and one of them."""
    write_recipes(folder)
    recipe: dict = {"stages": [
        {"name": "seed0", "recipe": "first.json"},
        {"name": "seed1", "recipe": "first.json", "set": {"seed": 1, "optim.learning_rate": 2e-3}},
        {"name": "soup", "soup": ["seed0", "seed1"]},
        {"name": "ensemble", "ensemble": ["soup", "seed0"], "int8": True},
    ]}  # fmt: skip
    if parallel is not None:
        recipe["parallel"] = parallel
    path = folder / f"joined_{parallel}.json"
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.slow
def test_stages_side_by_side_train_the_same_weights_as_one_after_another(
    tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    from captioner.cli import main

    outs = {}
    for parallel in (None, 2):
        out = tmp_path / f"out_{parallel}"
        command = ["train", "--config", str(joined_recipe(tmp_path, parallel)), "--data", str(tiny_scenes),
                   "--out", str(out), "--epochs", "1", "--json", *TINY_TRAINING, *SMALL]  # fmt: skip
        assert main(command) == 0
        outs[parallel] = (out, json.loads(capsys.readouterr().out))
    (one_by_one, _), (side_by_side, printed) = outs[None], outs[2]
    for stage in ("seed0", "seed1", "soup"):
        first, second = load_file(one_by_one / stage / "model.safetensors"), load_file(side_by_side / stage / "model.safetensors")
        assert first.keys() == second.keys()
        assert all(first[k].equal(second[k]) for k in first), stage
        assert (side_by_side / stage / "stage.log").stat().st_size > 0
    assert set(printed["stages"]) == {"seed0", "seed1", "soup", "ensemble"}
    assert printed["stages"]["ensemble"]["best"]["CIDEr"] == outs[None][1]["stages"]["ensemble"]["best"]["CIDEr"]
    state = json.loads((side_by_side / "pipeline.json").read_text())
    assert state["recipe"]["parallel"] == 2 and state["finished"]["soup"]["kind"] == "soup"
    # The shared cache was built once: the second stage waited for the first to finish it.
    assert "feature cache" in (side_by_side / "seed0" / "stage.log").read_text()
    assert "feature cache" not in (side_by_side / "seed1" / "stage.log").read_text()


def stage_processes(parent: int) -> list[int]:
    """The side-by-side stages' processes that ``parent`` started (Linux's /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
            command = (status.parent / "cmdline").read_bytes()
        except OSError:  # ended while we looked
            continue
        if fields.get("PPid", "").strip() == str(parent) and b"--multiprocessing-fork" in command:
            found.append(int(status.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="finds the stages' processes in Linux's /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stages_side_by_side_stop_when_their_command_is_killed(tiny_scenes: Path, tmp_path: Path, how: int) -> None:
    # SIGTERM (kill, timeout, a job scheduler) stops them as Ctrl-C does; after SIGKILL, which
    # nothing can catch, each stage notices it has lost its parent and stops itself.
    out = tmp_path / "out"
    command = [sys.executable, "-m", "captioner", "train", "--config", str(joined_recipe(tmp_path, 2)),
               "--data", str(tiny_scenes), "--out", str(out), "--epochs", "50", "--quiet", *TINY_TRAINING, *SMALL]  # fmt: skip
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stages: list[int] = []
    try:
        assert wait_for(lambda: len(stage_processes(parent.pid)) == 2, 120)
        stages = stage_processes(parent.pid)
        assert wait_for(lambda: all((out / name / "history.jsonl").exists() for name in ("seed0", "seed1")), 120)
        parent.send_signal(how)
        parent.wait(timeout=120)
        assert wait_for(lambda: not any(alive(pid) for pid in stages), 60)
        if how == signal.SIGTERM:
            assert parent.returncode == 130
            assert parent.stderr.read().strip().splitlines()[-1] == "captioner: interrupted"
        for name in ("seed0", "seed1"):
            assert "KeyboardInterrupt" in (out / name / "stage_result.json").read_text()
    finally:
        parent.kill()
        for pid in filter(alive, stages):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_a_stage_that_fails_in_its_own_process_is_one_line_naming_it_and_its_log(
    tiny_scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from captioner.cli import main

    write_recipes(tmp_path)
    not_a_cache = tmp_path / "my_photos"
    not_a_cache.mkdir()
    (not_a_cache / "notes.txt").write_text("mine")
    recipe = tmp_path / "failing.json"
    recipe.write_text(json.dumps({"parallel": 2, "stages": [
        {"name": "good", "recipe": "first.json"},
        {"name": "bad", "recipe": "first.json", "set": {"data.feature_cache": str(not_a_cache)}},
    ]}))  # fmt: skip
    out = tmp_path / "out"
    command = ["train", "--config", str(recipe), "--data", str(tiny_scenes), "--out", str(out),
               "--epochs", "1", *TINY_TRAINING, *SMALL, "--set", f"data.feature_cache={not_a_cache}"]  # fmt: skip
    assert main(command) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("captioner: error: stage ") and "is not a feature cache" in error
    assert f"(its log: {out}/" in error and "stage.log)" in error
    assert sorted(p.name for p in not_a_cache.iterdir()) == ["notes.txt"]


def test_parallel_is_a_positive_number_of_stages_and_only_for_recipes_of_several(tmp_path: Path) -> None:
    from captioner.cli import main

    write_recipes(tmp_path)
    for bad in (0, "2", True):
        with pytest.raises(ConfigError, match="\"parallel\" must be a whole number"):
            PipelineRecipe.from_dict({"parallel": bad, "stages": [{"name": "a", "recipe": "first.json"}]}, tmp_path / "p.json")
    recipe = PipelineRecipe.from_dict({"parallel": 3, "stages": [{"name": "a", "recipe": "first.json"}]}, tmp_path / "p.json")
    assert recipe.parallel == 3 and recipe.to_dict()["parallel"] == 3
    assert "parallel" not in PipelineRecipe.from_dict({"stages": [{"name": "a", "recipe": "first.json"}]}, tmp_path).to_dict()
    assert main(["train", "--config", str(tmp_path / "first.json"), "--out", str(tmp_path / "o"), "--parallel", "2"]) == 2


def test_each_of_n_side_by_side_stages_gets_its_share_of_the_threads(tmp_path: Path) -> None:
    from captioner.training.pipeline import lane_threads, stage_config

    assert [lane_threads(2, 2), lane_threads(4, 2), lane_threads(1, 2), lane_threads(16, 3)] == [1, 2, 1, 5]
    assert lane_threads(0, 2) == max(1, (__import__("os").cpu_count() or 1) // 2)
    write_recipes(tmp_path)
    recipe = PipelineRecipe.from_dict({"parallel": 2, "stages": [{"name": "a", "recipe": "first.json"}]}, tmp_path / "p.json")
    config = stage_config(recipe, recipe.stages[0], tmp_path / "out", ["data.path=x", "threads=4"])
    assert config.threads == 2


@pytest.mark.parametrize("name", ["flickr8k_lite0_shipped", "flickr8k_ensemble", "flickr8k_ensemble_fast", "flickr8k_ensemble_cpu"])
def test_every_shipped_recipe_of_stages_reads_and_its_settings_check(name: str, tmp_path: Path) -> None:
    from captioner.training.pipeline import check_stages, load_pipeline_recipe, stage_config

    recipe = load_pipeline_recipe(name)
    assert recipe is not None and recipe.stages
    check_stages(recipe, tmp_path, [])  # a mistyped or contradictory setting of any stage raises here
    for stage in recipe.stages:
        if stage.kind == "train" and stage.init_from:
            # A stage that starts from another's weights must build the same decoder.
            start = next(s for s in recipe.stages if s.name == stage.init_from)
            assert stage_config(recipe, stage, tmp_path, []).decoder == stage_config(recipe, start, tmp_path, []).decoder
