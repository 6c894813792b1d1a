"""Recipes of several stages: one command that trains runs in order, each from an earlier one,
and joins them into soups and ensembles.

``captioner train --config flickr8k_lite0_shipped --data DIR --out OUT`` caches the photos'
features, trains the cross-entropy stage, then the self-critical stage from its best weights. A
pipeline recipe is a JSON file with a ``stages`` list where a run recipe has its sections::

    {"description": "...",
     "stages": [{"name": "cross_entropy", "recipe": "flickr8k_lite0"},
                {"name": "self_critical", "recipe": "flickr8k_lite0_scst", "init_from": "cross_entropy",
                 "set": {"optim.epochs": 18, "seed": 1}},
                {"name": "soup", "soup": ["self_critical", "..."]},
                {"name": "ensemble", "ensemble": ["soup", "..."], "int8": true,
                 "set": {"eval.mirror_weight": 0.5}}]}

Three kinds of stage, each an ordinary directory ``OUT/<name>/``:

- a *training* stage (``recipe``) is a run directory with its own saved config: the run recipe,
  the stage's own ``set`` on top, then the command line's settings, which apply to every stage;
  its ``init_from`` names an earlier stage;
- a *soup* stage (``soup``) is the greedy weight soup of earlier stages (``training.soup``),
  validated as the first of them validates;
- an *ensemble* stage (``ensemble``, optional ``weights``, ``int8`` and ``eval.*`` settings in
  ``set``) is an ensemble directory of earlier stages (``training.ensemble``), scored by the
  ``evaluate`` callback where one is given.

A feature cache a stage recipe names is kept in ``OUT/features/<its folder name>`` (the first
stage that reads it builds it) unless the command line names one. ``OUT/pipeline.json`` records
the recipe, the settings and each finished stage, so that ``--resume`` skips the finished stages
and resumes the interrupted one; it also names the last stage, which is what loading ``OUT`` as a
checkpoint loads.

With ``"parallel": N`` in the recipe (or ``--parallel N``), stages that do not depend on each other
run at the same time, up to N at once, each training stage and soup in its own process with its
log in ``OUT/<name>/stage.log``, and ``threads`` (the machine's cores where unset) divided among
them. The division is fixed by N, not by which stages happen to overlap, so a stage trains with
the same thread count, and gives the same numbers, however the schedule falls. (On a 2-core CPU
two one-thread processes do more work than one two-thread process: the decoder's small products
split poorly over threads.) Ctrl-C (and SIGTERM, which ``captioner train`` takes as Ctrl-C) stops
the running stages, each saving its state; a stage whose command was killed outright stops itself
the same way.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner import errors
from captioner.encoders.cache import INDEX_FILE
from captioner.errors import CheckpointError, ConfigError
from captioner.recipes import recipe_path
from captioner.training import checkpoint
from captioner.training.checkpoint import PIPELINE_FILE
from captioner.training.config import RunConfig, apply_overrides
from captioner.training.ensemble import make_ensemble
from captioner.training.loop import resolve_device, train
from captioner.training.soup import soup_runs

FEATURES_DIR = "features"
STAGE_LOG = "stage.log"
"""A stage run in its own process (``parallel``) writes its log here, in its folder."""
_STAGE_RESULT = "stage_result.json"
_POLL_SECONDS = 5.0
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STAGE_KEYS = {
    "train": {"name", "recipe", "init_from", "set"},
    "soup": {"name", "soup"},
    "ensemble": {"name", "ensemble", "weights", "int8", "set"},
}


@dataclass(frozen=True)
class Stage:
    name: str
    """Also the stage's directory under the pipeline's output folder."""
    recipe: str | None = None
    """A training stage's run recipe: a shipped recipe's name, or a JSON file (relative to the
    pipeline file)."""
    init_from: str | None = None
    """An earlier stage whose best weights this training stage starts from."""
    settings: tuple[tuple[str, Any], ...] = ()
    """The stage's own ``set``: ``section.field`` -> value, over its recipe (an ensemble: ``eval.*``)."""
    soup: tuple[str, ...] = ()
    """A soup stage's ingredients: earlier stages."""
    ensemble: tuple[str, ...] = ()
    """An ensemble stage's members: earlier stages."""
    weights: tuple[float, ...] = ()
    """An ensemble's mixture weights, one per member (empty: equal)."""
    int8: bool = False
    """An ensemble's members stored as int8."""

    @property
    def kind(self) -> str:
        return "soup" if self.soup else "ensemble" if self.ensemble else "train"

    @property
    def sources(self) -> tuple[str, ...]:
        """The earlier stages this one is made from."""
        return self.soup or self.ensemble or ((self.init_from,) if self.init_from else ())

    def assignments(self) -> list[str]:
        return [f"{key}={json.dumps(value)}" for key, value in self.settings]

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"name": self.name}
        if self.kind == "train":
            values["recipe"] = self.recipe
            if self.init_from:
                values["init_from"] = self.init_from
        elif self.kind == "soup":
            values["soup"] = list(self.soup)
        else:
            values["ensemble"] = list(self.ensemble)
            if self.weights:
                values["weights"] = list(self.weights)
            if self.int8:
                values["int8"] = True
        if self.settings:
            values["set"] = dict(self.settings)
        return values


def _stage_kind(entry: dict[str, Any]) -> str | None:
    kinds = [kind for kind, key in (("train", "recipe"), ("soup", "soup"), ("ensemble", "ensemble")) if key in entry]
    return kinds[0] if len(kinds) == 1 else None


def _parse_stage(entry: Any, where: str, earlier: list[Stage]) -> Stage:
    kind = _stage_kind(entry) if isinstance(entry, dict) else None
    if kind is None or set(entry) - _STAGE_KEYS[kind]:
        raise ConfigError(
            f"{where} must be an object with \"name\" and one of: \"recipe\" (with optional \"init_from\", "
            "\"set\"), \"soup\" (a list of stages), \"ensemble\" (a list of stages, with optional \"weights\", "
            "\"int8\", \"set\")"
        )
    name = entry.get("name")
    if not isinstance(name, str) or not _STAGE_NAME.match(name) or name == FEATURES_DIR:
        raise ConfigError(f"{where}: \"name\" must be a folder name of letters, digits, '_', '.', '-' "
                          f"(and not {FEATURES_DIR!r}), got {name!r}")
    where = f"{where} ({name})"
    if any(stage.name == name for stage in earlier):
        raise ConfigError(f"{where}: the name {name!r} is used twice")
    by_name = {stage.name: stage for stage in earlier}

    def earlier_runs(key: str, names: Any, at_least: int) -> tuple[str, ...]:
        if not isinstance(names, list) or len(names) < at_least or not all(isinstance(n, str) for n in names):
            raise ConfigError(f"{where}: \"{key}\" must be a list of at least {at_least} earlier stage names")
        for source in names:
            if source not in by_name:
                raise ConfigError(f"{where}: {key} {source!r} is not an earlier stage")
            if by_name[source].kind == "ensemble":
                raise ConfigError(f"{where}: {key} {source!r} is an ensemble; name the runs it is made of")
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: \"{key}\" names a stage twice")
        return tuple(names)

    settings = entry.get("set", {})
    if not isinstance(settings, dict) or not all(isinstance(key, str) and key for key in settings):
        raise ConfigError(f"{where}: \"set\" must map settings such as \"optim.epochs\" to values")
    if kind == "train":
        recipe, init_from = entry.get("recipe"), entry.get("init_from")
        if not isinstance(recipe, str) or not recipe:
            raise ConfigError(f"{where}: \"recipe\" must name a run recipe")
        if init_from is not None:
            earlier_runs("init_from", [init_from], 1)
        return Stage(name, recipe, init_from, tuple(settings.items()))
    if kind == "soup":
        return Stage(name, soup=earlier_runs("soup", entry["soup"], 2))
    members = earlier_runs("ensemble", entry["ensemble"], 1)
    weights = entry.get("weights", [])
    if not isinstance(weights, list) or (weights and len(weights) != len(members)) or not all(
        isinstance(w, (int, float)) and not isinstance(w, bool) and w > 0 for w in weights
    ):
        raise ConfigError(f"{where}: \"weights\" must be one positive number per member")
    if not isinstance(entry.get("int8", False), bool):
        raise ConfigError(f"{where}: \"int8\" must be true or false")
    if any(not key.startswith("eval.") for key in settings):
        raise ConfigError(f"{where}: an ensemble's \"set\" takes eval.* settings only; its members keep their own")
    return Stage(name, settings=tuple(settings.items()), ensemble=members,
                 weights=tuple(float(w) for w in weights), int8=entry.get("int8", False))  # fmt: skip


@dataclass(frozen=True)
class PipelineRecipe:
    stages: tuple[Stage, ...]
    description: str
    source: Path
    parallel: int = 1
    """How many independent stages may run at once, each in its own process."""

    @classmethod
    def from_dict(cls, values: Any, source: Path) -> PipelineRecipe:
        if not isinstance(values, dict) or not isinstance(values.get("stages"), list) or not values["stages"]:
            raise ConfigError(f"{source}: a pipeline recipe needs a non-empty list \"stages\"")
        unknown = set(values) - {"stages", "description", "parallel"}
        if unknown:
            raise ConfigError(f"{source}: unknown pipeline setting(s) {', '.join(sorted(unknown))}; "
                              "a pipeline holds only \"description\", \"parallel\" and \"stages\"")
        parallel = values.get("parallel", 1)
        if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
            raise ConfigError(f"{source}: \"parallel\" must be a whole number of stages at once, 1 or more; got {parallel!r}")
        stages: list[Stage] = []
        for position, entry in enumerate(values["stages"], start=1):
            stages.append(_parse_stage(entry, f"{source}: stage {position}", stages))
        return cls(tuple(stages), str(values.get("description", "")), source, parallel)

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"description": self.description}
        if self.parallel > 1:
            values["parallel"] = self.parallel
        return {**values, "stages": [stage.to_dict() for stage in self.stages]}


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
    """A training stage's run recipe with the stage's own ``set`` on top, its feature caches
    moved under ``out``, the command line's ``settings`` on top of that, and ``init_from``
    pointed at the earlier stage."""
    assert stage.recipe is not None, "only training stages have a run config"
    local = recipe.source.parent / stage.recipe
    values = RunConfig.load(local if local.suffix == ".json" and local.is_file() else recipe_path(stage.recipe)).to_dict()
    apply_overrides(values, stage.assignments())
    for field in ("feature_cache", "mirror_feature_cache"):
        if values["data"].get(field):
            values["data"][field] = str(out / FEATURES_DIR / Path(values["data"][field]).name)
    apply_overrides(values, settings)
    if recipe.parallel > 1:
        values["threads"] = lane_threads(values.get("threads", 0), recipe.parallel)
    if stage.init_from:
        values["init_from"] = str(out / stage.init_from)
    config = RunConfig.from_dict(values, source=f"{recipe.source} stage {stage.name}")
    if not config.data.path:
        raise ConfigError(f"stage {stage.name} has no dataset: pass --data PATH or set data.path in {stage.recipe}")
    return config


def lane_threads(threads: int, parallel: int) -> int:
    """Each of ``parallel`` processes' share of ``threads`` (0: this machine's cores), at least 1."""
    return max(1, (threads or os.cpu_count() or 1) // parallel)


def check_stages(recipe: PipelineRecipe, out: Path, settings: list[str]) -> None:
    """Every stage's settings, checked before the first stage starts, so that a mistyped setting
    of the last stage fails now rather than hours into the recipe."""
    for stage in recipe.stages:
        if stage.kind == "train":
            stage_config(recipe, stage, out, settings)
        elif stage.kind == "ensemble" and stage.settings:
            values: dict[str, Any] = {}
            apply_overrides(values, stage.assignments())
            RunConfig.from_dict(values, source=f"{recipe.source} stage {stage.name} \"set\"")


def _device_setting(settings: list[str]) -> str:
    """The command line's ``device`` (this machine's, where a recipe resumes on another), else auto."""
    named = [value for key, _, value in (s.partition("=") for s in settings) if key == "device"]
    return json.loads(named[-1]) if named and named[-1].startswith('"') else named[-1] if named else "auto"


@dataclass
class PipelineResult:
    out: Path
    stages: dict[str, dict[str, Any]]
    """Per finished stage: run_dir, kind, seconds, best (validation scores), and epochs for a
    training stage."""


EnsembleScorer = Callable[[Path, RunConfig], dict[str, Any]]
"""Scores an ensemble directory on its first member's validation split (``run_pipeline``'s
``evaluate``); the ensemble's members read photos, so this is where the photos are captioned."""


def run_pipeline(
    recipe: PipelineRecipe,
    out: str | Path,
    settings: list[str],
    resume: bool = False,
    progress: bool = True,
    on_stage: Callable[[Stage, RunConfig | None], None] | None = None,
    evaluate: EnsembleScorer | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> PipelineResult:
    """Run ``recipe``'s stages into ``out`` (see the module docstring): in order, or with
    ``recipe.parallel`` > 1, independent stages side by side in their own processes.

    ``settings`` are ``section.field=value`` assignments applied to every training stage (the
    command line's flags and ``--set``). With ``resume``, stages recorded as finished in
    ``out/pipeline.json`` are skipped, provided the recipe and settings are the ones recorded.
    ``evaluate`` scores each ensemble stage (without it, an ensemble records no scores);
    ``report`` receives a soup's validation lines.
    """
    out = Path(out)
    check_stages(recipe, out, settings)
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

    def finish(stage: Stage, record: dict[str, Any]) -> None:
        state["finished"][stage.name] = {"run_dir": str(out / stage.name), "kind": stage.kind, **record}
        checkpoint.write_json(state_path, state)

    here = _StageContext(recipe, out, settings, resume, progress, on_stage, evaluate, report)
    if recipe.parallel > 1:
        _run_side_by_side(here, [s for s in recipe.stages if s.name not in state["finished"]], finish)
    else:
        for stage in recipe.stages:
            if stage.name not in state["finished"]:
                finish(stage, here.run(stage))
    return PipelineResult(out, state["finished"])


@dataclass
class _StageContext:
    """What running one stage needs, in this process or in a child."""

    recipe: PipelineRecipe
    out: Path
    settings: list[str]
    resume: bool
    progress: bool
    on_stage: Callable[[Stage, RunConfig | None], None] | None
    evaluate: EnsembleScorer | None
    report: Callable[[str], None]

    def run(self, stage: Stage) -> dict[str, Any]:
        """Run ``stage`` in this process; its record for ``pipeline.json``."""
        run_dir = self.out / stage.name
        started = time.perf_counter()
        config = stage_config(self.recipe, stage, self.out, self.settings) if stage.kind == "train" else None
        if self.on_stage is not None:
            self.on_stage(stage, config)
        if config is not None:
            resume_stage = self.resume and checkpoint.training_state_path(run_dir).exists()
            return _train_record(train(config, run_dir, resume=resume_stage, progress=self.progress))
        if stage.kind == "soup":
            soup = soup_runs([self.out / name for name in stage.soup], run_dir, device=self.device, report=self.report)
            record = _soup_record(soup)
        else:
            eval_settings: dict[str, Any] = {}
            apply_overrides(eval_settings, stage.assignments())
            ensemble = make_ensemble([self.out / name for name in stage.ensemble], run_dir, list(stage.weights) or None,
                                     int8=stage.int8, eval_settings=eval_settings.get("eval"))  # fmt: skip
            best = self.evaluate(run_dir, ensemble.config) if self.evaluate is not None else {}
            if best:
                checkpoint.write_json(run_dir / checkpoint.METRICS_FILE, best)
            record = {"members": list(stage.ensemble), "weights": ensemble.weights, "best": best}
        return {**record, "seconds": round(time.perf_counter() - started, 1)}

    @property
    def device(self):
        return resolve_device(_device_setting(self.settings))


def _train_record(result) -> dict[str, Any]:
    return {"epochs": result.epochs_run, "seconds": round(result.seconds, 1), "best": result.best_metrics}


def _soup_record(soup) -> dict[str, Any]:
    return {"ingredients": [Path(p).name for p in soup.ingredients], "best": soup.metrics}


def _cache_folders(config: RunConfig) -> set[Path]:
    return {Path(path) for path in (config.data.feature_cache, config.data.mirror_feature_cache) if path}


@dataclass
class _Child:
    stage: Stage
    process: multiprocessing.process.BaseProcess
    result_path: Path
    log_path: Path
    config: RunConfig | None
    interrupts: int = 0

    def interrupt(self) -> None:
        """Ask the stage to stop as Ctrl-C does (a training stage saves its state first)."""
        if self.process.is_alive() and self.process.pid is not None:
            self.interrupts += 1
            os.kill(self.process.pid, signal.SIGINT)

    def outcome(self) -> dict[str, Any]:
        try:
            return json.loads(self.result_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {"error": "RuntimeError",
                    "message": f"the stage's process ended with exit code {self.process.exitcode} and no result"}


def _run_side_by_side(
    here: _StageContext, pending: list[Stage], finish: Callable[[Stage, dict[str, Any]], None]
) -> None:
    """Run ``pending`` (in recipe order) as their sources finish, up to ``recipe.parallel`` at once:
    training stages and soups each in a child process, ensembles here once nothing else runs
    (their scoring reads photos with every thread). Two stages that build the same feature cache
    never run together. A failed or interrupted stage stops the others at their next step (a
    training stage saves its state), so that ``--resume`` goes on from there."""
    context = multiprocessing.get_context("spawn")
    parallel = here.recipe.parallel
    configs = {s.name: stage_config(here.recipe, s, here.out, here.settings) for s in pending if s.kind == "train"}
    running: dict[str, _Child] = {}
    done: set[str] = {s.name for s in here.recipe.stages} - {s.name for s in pending}
    progress = _EpochProgress(configs, here.out, enabled=here.progress)
    failure: tuple[Stage, dict[str, Any], Path] | None = None

    def may_start(stage: Stage) -> bool:
        if not all(source in done for source in stage.sources):
            return False
        if stage.kind == "ensemble":
            return not running
        if stage.kind != "train":
            return True
        building = {folder for child in running.values() if child.config is not None
                    for folder in _cache_folders(child.config) if not (folder / INDEX_FILE).exists()}  # fmt: skip
        return not (building & _cache_folders(configs[stage.name]))

    def collect(child: _Child) -> None:
        nonlocal failure
        child.process.join()
        del running[child.stage.name]
        outcome = child.outcome()
        if "record" in outcome:
            for line in outcome.get("report", []):
                here.report(line)
            done.add(child.stage.name)
            progress.finished(child.stage.name)
            finish(child.stage, outcome["record"])
        elif failure is None:
            failure = (child.stage, outcome, child.log_path)
            for other in running.values():
                other.interrupt()

    try:
        while pending or running:
            for stage in list(pending):
                if failure is not None or len(running) >= parallel or not may_start(stage):
                    continue
                pending.remove(stage)
                if stage.kind == "ensemble":
                    finish(stage, here.run(stage))
                    done.add(stage.name)
                    continue
                running[stage.name] = _start_child(context, here, stage, configs.get(stage.name))
            if not running:
                if failure is not None or not pending:
                    break
                if not any(may_start(stage) for stage in pending):
                    raise RuntimeError(f"no stage can start: {[s.name for s in pending]} wait on stages that never ran")
                continue
            multiprocessing.connection.wait([child.process.sentinel for child in running.values()], _POLL_SECONDS)
            progress.update(running)
            for child in [c for c in running.values() if not c.process.is_alive()]:
                collect(child)
    except KeyboardInterrupt:
        # The children are in their own process groups (Ctrl-C reaches only this one): forward it
        # once, so that each saves its state, and keep what finished meanwhile.
        for child in running.values():
            child.interrupt()
        for child in list(running.values()):
            collect(child)
        raise
    finally:
        progress.close()
    if failure is not None:
        stage, outcome, log_path = failure
        if outcome.get("error") == "KeyboardInterrupt":
            raise KeyboardInterrupt
        error_type = getattr(errors, str(outcome.get("error")), None)
        if not (isinstance(error_type, type) and issubclass(error_type, errors.CaptionerError)):
            error_type = RuntimeError
        raise error_type(f"stage {stage.name}: {outcome.get('message')} (its log: {log_path})")


def _stop_when_orphaned(parent: int, period: float = 1.0) -> None:
    """In a stage's process: interrupt it as Ctrl-C does (a training stage saves its state) once
    ``parent`` is gone, e.g. killed with SIGKILL or by the kernel when memory ran out."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


def _start_child(context, here: _StageContext, stage: Stage, config: RunConfig | None) -> _Child:
    run_dir = here.out / stage.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path, result_path = run_dir / STAGE_LOG, run_dir / _STAGE_RESULT
    result_path.unlink(missing_ok=True)
    if here.on_stage is not None:
        here.on_stage(stage, config)
    if config is not None:
        resume_stage = here.resume and checkpoint.training_state_path(run_dir).exists()
        job: dict[str, Any] = {"kind": "train", "config": config, "run_dir": str(run_dir), "resume": resume_stage}
        threads = config.threads
    else:
        threads = lane_threads(0, here.recipe.parallel)
        job = {"kind": "soup", "ingredients": [str(here.out / name) for name in stage.soup],
               "run_dir": str(run_dir), "device": str(here.device), "threads": threads}  # fmt: skip
    job["parent"] = os.getpid()
    here.report(f"{stage.name}: its own process, {threads} thread{'s' * (threads != 1)}, log {log_path}")
    process = context.Process(target=_stage_process, args=(job, str(log_path), str(result_path)), name=stage.name)
    process.start()
    return _Child(stage, process, result_path, log_path, config)


def _stage_process(job: dict[str, Any], log_path: str, result_path: str) -> None:
    """A child process's whole life: one training stage or soup, its output into ``log_path``,
    its record (or its error) into ``result_path``."""
    if hasattr(os, "setpgrp"):
        os.setpgrp()  # Ctrl-C reaches the parent, which forwards it exactly once
    _stop_when_orphaned(job["parent"])
    with open(log_path, "a", buffering=1, encoding="utf-8") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
        started = time.perf_counter()
        try:
            if job["kind"] == "train":
                record = _train_record(train(job["config"], job["run_dir"], resume=job["resume"], progress=False))
                lines: list[str] = []
            else:
                import torch

                torch.set_num_threads(job["threads"])
                lines = []

                def report(line: str) -> None:
                    lines.append(line)
                    print(line, file=sys.stderr)

                soup = soup_runs(job["ingredients"], job["run_dir"], device=job["device"], report=report)
                record = {**_soup_record(soup), "seconds": round(time.perf_counter() - started, 1)}
        except BaseException as error:
            checkpoint.write_json(Path(result_path), {"error": type(error).__name__, "message": str(error)})
            raise
        checkpoint.write_json(Path(result_path), {"record": record, "report": lines})


class _EpochProgress:
    """One bar over the epochs of every training stage still to run, with an ETA, read from the
    ``history.jsonl`` the running stages append to after each epoch."""

    def __init__(self, configs: dict[str, RunConfig], out: Path, enabled: bool) -> None:
        self.out = out
        self.planned = {name: config.optim.epochs for name, config in configs.items()}
        self.counted = {name: self._epochs_done(name) for name in configs}
        self.bar = None
        if enabled and self.planned:
            from tqdm import tqdm

            self.bar = tqdm(total=sum(self.planned.values()), initial=sum(self.counted.values()),
                            unit="epoch", desc="stages", dynamic_ncols=True)  # fmt: skip

    def _epochs_done(self, name: str) -> int:
        history = self.out / name / "history.jsonl"
        epochs: set[int] = set()
        if history.is_file():
            for line in history.read_text(encoding="utf-8").splitlines():
                try:
                    epoch = json.loads(line).get("epoch", 0)
                except (json.JSONDecodeError, AttributeError):
                    continue
                if isinstance(epoch, int) and epoch > 0:
                    epochs.add(epoch)
        return min(len(epochs), self.planned[name])

    def _advance(self, name: str, epochs: int) -> None:
        if self.bar is not None and epochs > self.counted[name]:
            self.bar.update(epochs - self.counted[name])
        self.counted[name] = max(self.counted[name], epochs)

    def update(self, running: dict[str, _Child]) -> None:
        for name in running:
            if name in self.planned:
                self._advance(name, self._epochs_done(name))
        if self.bar is not None:
            self.bar.set_postfix_str(", ".join(running), refresh=True)

    def finished(self, name: str) -> None:
        """A stage that stopped early counts all its planned epochs."""
        if name in self.planned:
            self._advance(name, self.planned[name])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
