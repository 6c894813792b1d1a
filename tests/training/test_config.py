import json
from pathlib import Path

import pytest

from captioner.errors import ConfigError
from captioner.recipes import available_recipes, recipe_path
from captioner.training.pipeline import load_pipeline_recipe, stage_config
from captioner.training.config import RunConfig


def test_config_round_trips_through_json(tmp_path):
    config = RunConfig()
    config.optim.epochs = 3
    config.encoder.name = "small_cnn"
    config.data.feature_cache = "cache"
    config.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == config


@pytest.mark.parametrize(
    "values, message",
    [
        ({"optim": {"epoch": 3}}, "unknown setting 'optim.epoch'"),
        ({"optim": {"epochs": "3"}}, "'optim.epochs' must be int"),
        ({"optim": {"learning_rate": True}}, "'optim.learning_rate'"),
        ({"decoder": 5}, "'decoder' must be an object"),
        ({"colour": "red"}, "unknown setting 'colour'"),
    ],
)
def test_bad_settings_are_named(values, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("guidance_threshold", 3.0, "eval.guidance_threshold must be a probability between 0 and 1, got 3.0"),
        ("guidance_trust", -0.5, "eval.guidance_trust must be a probability"),
        ("guidance_margin", -1.0, "eval.guidance_margin must be at least 0"),
    ],
)
def test_out_of_range_guidance_settings_name_the_file_and_the_setting(tmp_path, setting, value, message):
    values = RunConfig().to_dict()
    values["eval"][setting] = value
    path = tmp_path / "config.json"
    path.write_text(json.dumps(values))
    with pytest.raises(ConfigError, match=f"^{path}: {message}"):
        RunConfig.load(path)


def test_integer_accepted_where_float_expected():
    assert RunConfig.from_dict({"optim": {"learning_rate": 1}}).optim.learning_rate == 1.0


def test_config_file_errors_are_one_line(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="broken.json is not valid JSON"):
        RunConfig.load(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        RunConfig.load(tmp_path / "absent.json")


def test_every_shipped_recipe_loads():
    names = available_recipes()
    assert {"scenes_small_cnn", "flickr8k_lite0"} <= set(names)
    for name in names:
        pipeline = load_pipeline_recipe(name)
        if pipeline is not None:  # a recipe of several stages: each training stage names a shipped run recipe
            training = [stage for stage in pipeline.stages if stage.kind == "train"]
            assert all(stage.recipe in names for stage in training)
            for stage in training:  # and its own settings are settings of that recipe
                stage_config(pipeline, stage, Path("out"), [])
            continue
        config = RunConfig.load(recipe_path(name))
        assert json.loads(json.dumps(config.to_dict())) == config.to_dict()
