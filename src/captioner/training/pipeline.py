"""Recipes of several stages: one command that trains runs in order, each from an earlier one.

``captioner train --config flickr8k_lite0_shipped --data DIR --out OUT`` caches the photos'
features, trains the cross-entropy stage, then the self-critical stage from its best weights. A
pipeline recipe is a JSON file with a ``stages`` list where a run recipe has its sections::

    {"description": "...",
     "stages": [{"name": "cross_entropy", "recipe": "flickr8k_lite0"},
                {"name": "self_critical", "recipe": "flickr8k_lite0_scst", "init_from": "cross_entropy"}]}

Each stage is an ordinary run directory, ``OUT/<name>/``, with its own saved config. Settings
given on the command line apply to every stage; a stage's ``init_from`` names an earlier stage.
A feature cache a stage recipe names is kept in ``OUT/features/<its folder name>`` (the first
stage that reads it builds it) unless the command line names one. ``OUT/pipeline.json`` records
the recipe, the settings and each finished stage, so that ``--resume`` skips the finished stages
and resumes the interrupted one; it also names the last stage, which is what loading ``OUT`` as a
checkpoint loads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.errors import CheckpointError, ConfigError
from captioner.recipes import recipe_path
from captioner.training import checkpoint
from captioner.training.checkpoint import PIPELINE_FILE
from captioner.training.config import RunConfig, apply_overrides
from captioner.training.loop import train

FEATURES_DIR = "features"
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Stage:
    name: str
    """Also the stage's run directory under the pipeline's output folder."""
    recipe: str
    """A run recipe: a shipped recipe's name, or a JSON file (relative to the pipeline file)."""
    init_from: str | None = None
    """An earlier stage whose best weights this one starts from."""


@dataclass(frozen=True)
class PipelineRecipe:
    stages: tuple[Stage, ...]
    description: str
    source: Path

    @classmethod
    def from_dict(cls, values: Any, source: Path) -> PipelineRecipe:
        if not isinstance(values, dict) or not isinstance(values.get("stages"), list) or not values["stages"]:
            raise ConfigError(f"{source}: a pipeline recipe needs a non-empty list \"stages\"")
        unknown = set(values) - {"stages", "description"}
        if unknown:
            raise ConfigError(f"{source}: unknown pipeline setting(s) {', '.join(sorted(unknown))}; "
                              "a pipeline holds only \"description\" and \"stages\"")
        stages: list[Stage] = []
        for position, entry in enumerate(values["stages"], start=1):
            where = f"{source}: stage {position}"
            if not isinstance(entry, dict) or set(entry) - {"name", "recipe", "init_from"}:
                raise ConfigError(f"{where} must be an object with \"name\", \"recipe\" and optionally \"init_from\"")
            name, recipe, init_from = entry.get("name"), entry.get("recipe"), entry.get("init_from")
            if not isinstance(name, str) or not _STAGE_NAME.match(name) or name == FEATURES_DIR:
                raise ConfigError(f"{where}: \"name\" must be a folder name of letters, digits, '_', '.', '-' "
                                  f"(and not {FEATURES_DIR!r}), got {name!r}")
            if any(stage.name == name for stage in stages):
                raise ConfigError(f"{where}: the name {name!r} is used twice")
            if not isinstance(recipe, str) or not recipe:
                raise ConfigError(f"{where} ({name}): \"recipe\" must name a run recipe")
            if init_from is not None and not any(stage.name == init_from for stage in stages):
                raise ConfigError(f"{where} ({name}): init_from {init_from!r} is not an earlier stage")
            stages.append(Stage(name, recipe, init_from))
        return cls(tuple(stages), str(values.get("description", "")), source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "stages": [
                {"name": s.name, "recipe": s.recipe, **({"init_from": s.init_from} if s.init_from else {})}
                for s in self.stages
            ],
        }


def load_pipeline_recipe(name_or_path: str) -> PipelineRecipe | None:
    """The pipeline recipe ``--config`` names, or ``None`` where it names a run recipe."""
    path = recipe_path(name_or_path)
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # RunConfig.load reports the file's problem in its own words
    if isinstance(values, dict) and "stages" in values:
        return PipelineRecipe.from_dict(values, path)
    return None


def read_state(out: str | Path) -> tuple[PipelineRecipe, list[str], dict[str, Any]]:
    """What ``out/pipeline.json`` records: the recipe, the settings, the finished stages."""
    state_path = Path(out) / PIPELINE_FILE
    state = checkpoint.read_json(state_path, "pipeline state")
    try:
        recipe = PipelineRecipe.from_dict(state["recipe"], Path(state["recipe_source"]))
        settings, finished = list(state["settings"]), dict(state["finished"])
    except (KeyError, TypeError, ValueError, ConfigError):
        raise CheckpointError(
            f"{state_path} is not the state of a recipe of several stages as `captioner train` writes it; "
            "start again with another --out"
        ) from None
    return recipe, settings, finished


def stage_config(recipe: PipelineRecipe, stage: Stage, out: Path, settings: list[str]) -> RunConfig:
    """The stage's run recipe, its feature caches moved under ``out``, the command line's
    ``settings`` on top, and ``init_from`` pointed at the earlier stage."""
    local = recipe.source.parent / stage.recipe
    values = RunConfig.load(local if local.suffix == ".json" and local.is_file() else recipe_path(stage.recipe)).to_dict()
    for field in ("feature_cache", "mirror_feature_cache"):
        if values["data"].get(field):
            values["data"][field] = str(out / FEATURES_DIR / Path(values["data"][field]).name)
    apply_overrides(values, settings)
    if stage.init_from:
        values["init_from"] = str(out / stage.init_from)
    config = RunConfig.from_dict(values, source=f"{recipe.source} stage {stage.name}")
    if not config.data.path:
        raise ConfigError(f"stage {stage.name} has no dataset: pass --data PATH or set data.path in {stage.recipe}")
    return config


@dataclass
class PipelineResult:
    out: Path
    stages: dict[str, dict[str, Any]]
    """Per finished stage: run_dir, epochs, seconds, best (as the stage's ``metrics.json``)."""


def run_pipeline(
    recipe: PipelineRecipe,
    out: str | Path,
    settings: list[str],
    resume: bool = False,
    progress: bool = True,
    on_stage: Callable[[Stage, RunConfig], None] | None = None,
) -> PipelineResult:
    """Train ``recipe``'s stages in order into ``out`` (see the module docstring).

    ``settings`` are ``section.field=value`` assignments applied to every stage (the command
    line's flags and ``--set``). With ``resume``, stages recorded as finished in
    ``out/pipeline.json`` are skipped, provided the recipe and settings are the ones recorded.
    """
    out = Path(out)
    state_path = out / PIPELINE_FILE
    state: dict[str, Any] = {
        "recipe": recipe.to_dict(), "recipe_source": str(recipe.source), "settings": list(settings),
        "final": recipe.stages[-1].name, "finished": {},
    }  # fmt: skip
    if resume and state_path.is_file():
        saved_recipe, saved_settings, finished = read_state(out)
        if saved_recipe.to_dict() != state["recipe"] or saved_settings != state["settings"]:
            raise CheckpointError(
                f"{state_path} records another recipe or other settings; resume with the same "
                "--config and settings (or start again with another --out)"
            )
        state["finished"] = finished
    out.mkdir(parents=True, exist_ok=True)
    checkpoint.write_json(state_path, state)

    for stage in recipe.stages:
        if stage.name in state["finished"]:
            continue
        config = stage_config(recipe, stage, out, settings)
        if on_stage is not None:
            on_stage(stage, config)
        run_dir = out / stage.name
        resume_stage = resume and checkpoint.training_state_path(run_dir).exists()
        result = train(config, run_dir, resume=resume_stage, progress=progress)
        state["finished"][stage.name] = {
            "run_dir": str(run_dir), "epochs": result.epochs_run, "seconds": round(result.seconds, 1),
            "best": result.best_metrics,
        }  # fmt: skip
        checkpoint.write_json(state_path, state)
    return PipelineResult(out, state["finished"])
