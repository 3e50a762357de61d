"""The run plan of a sweep: its stages, built once, run in order, each later one starting from an earlier one.

    name: seed_pretrain_finetune
    search: {model.name: {grid: [vit, deit, swin, resnet]}}
    stages:
      - name: pretrain
        trainable: train
        dataset: {name: cifar100}
      - name: finetune
        trainable: finetune
        dataset: {name: cifar10}
        from: {stage: pretrain, metric: val/acc, mode: max}

A sweep without `stages:` is a plan of one stage. Each stage is the sweep's top-level keys with
the stage's own keys (`StageSpec`) merged over them (mappings merge key by key; lists and scalars
replace; in `search`, `key: null` drops a searched key), validated as a sweep of its own whose
`stage` is the stage's name. Each stage runs as its own Ray Tune experiment and MLflow parent run;
its rows carry the `stage` column.

`from:` links trials: a trial of the later stage gets `start` (`StartConfig`: stage, trial_id,
checkpoint) set per trial, never searched: the best checkpoint, by `metric`, among the earlier
stage's trials whose values of the `match` keys equal its own. `match` defaults to the grid keys
both stages search (`model.name` above: each model fine-tunes its own pretraining); with no shared
key, every trial starts from the earlier stage's single best checkpoint. The earlier stage keeps
its checkpoints ranked by that metric. When the matching earlier trial failed or left no
checkpoint, `start.checkpoint` is None and `start.error` says why: that trial fails saying so, and
the sweep goes on.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.driver.dotted_keys import get_path, has_path
from orchestrator.driver.schema import (
    StageSource,
    StageSpec,
    SweepConfig,
    SweepError,
    validate_sweep_dict,
)
from orchestrator.driver.smoke import apply_smoke
from trainables.config import StartConfig

# The trial config key a linked stage's trials receive their starting checkpoint in.
START_KEY = "start"


@dataclass
class Stage:
    """One Ray Tune experiment of the plan; `name` is None for a sweep without `stages:`."""

    name: str | None
    sweep: SweepConfig
    source: StageSource | None = None
    match: list[str] = field(default_factory=list)
    # (metric, mode) a later stage picks this stage's checkpoints by, once one does.
    ranked_by: tuple[str, str] | None = None


@dataclass
class StageCheckpoint:
    """One earlier-stage trial: its best checkpoint file, or None and why."""

    trial_id: str
    config: dict[str, Any]
    path: str | None
    score: float | None
    error: str | None = None


def build_plan(
    sweep: SweepConfig,
    *,
    source: str | None = None,
    adjust: Callable[[SweepConfig], SweepConfig] | None = None,
) -> list[Stage]:
    """The stages to run, in order (SweepError naming `stages[i] (name).<key>` on bad ones).

    `adjust` runs on each stage's sweep after the merge: what the CLI does to the whole sweep
    (swapping unreachable weights and data) must reach keys a stage sets itself. --smoke is
    applied again to each merged stage for the same reason.
    """
    source = source or sweep.name
    if not sweep.stages:
        return [Stage(name=None, sweep=adjust(sweep) if adjust else sweep)]
    base = sweep.model_dump(mode="json", exclude={"stages"})
    stages: list[Stage] = []
    for i, spec in enumerate(sweep.stages):
        where = f"{source}: stages[{i}] ({spec.name})"
        if any(s.name == spec.name for s in stages):
            raise SweepError(
                f"{where}.name: {spec.name!r} is used by an earlier stage; names must differ"
            )
        link = _check_source(spec, where, [s.name for s in stages if s.name])
        merged = _merge(base, spec.overrides)
        merged["stage"] = spec.name
        stage_sweep = validate_sweep_dict(merged, source=where)
        if stage_sweep.smoke:
            stage_sweep = apply_smoke(stage_sweep)
        if adjust is not None:
            stage_sweep = adjust(stage_sweep)
        stage = Stage(name=spec.name, sweep=stage_sweep, source=link)
        if link is not None:
            producer = next(s for s in stages if s.name == link.stage)
            stage.match = _match_keys(stage_sweep, producer.sweep, link, where)
            _rank_checkpoints(
                producer,
                producer_spec=sweep.stages[stages.index(producer)],
                link=link,
                base_checkpoint_set=_explicit_checkpoint(sweep),
                where=where,
            )
        stages.append(stage)
    return stages


def run_stages(
    stages: list[Stage],
    run_one: Callable[[Stage, dict[str, Any]], Any],
    collect: Callable[[Any, str, str], list[StageCheckpoint]],
) -> list[Any]:
    """Run `stages` in order; returns what `run_one` returned for each.

    `run_one(stage, space_overrides)` runs one stage's sweep with `space_overrides` (dotted key ->
    Ray Tune domain) set into its param space; `collect(outcome, metric, mode)` lists each of its
    trials with the best checkpoint by `metric` (see `collect_checkpoints`).
    """
    from ray import tune

    produced: dict[str, list[StageCheckpoint]] = {}
    outcomes = []
    for stage in stages:
        overrides: dict[str, Any] = {}
        if stage.source is not None:
            lookup = CheckpointLookup(
                stage=stage.source.stage,
                match=stage.match,
                mode=stage.source.mode,
                candidates=produced[stage.source.stage],
            )
            overrides[START_KEY] = tune.sample_from(lookup)
        outcome = run_one(stage, overrides)
        outcomes.append(outcome)
        if getattr(outcome, "stopped_by", None) is not None:
            break  # Ctrl-C / SIGTERM: later stages wait for --resume
        if stage.name and any(
            s.source is not None and s.source.stage == stage.name for s in stages
        ):
            ck = stage.sweep.checkpoint
            produced[stage.name] = collect(outcome, ck.metric, ck.mode)
    return outcomes


@dataclass
class CheckpointLookup:
    """Ray Tune `sample_from` function: a trial's config -> its `start` (a `StartConfig` dict).

    Picklable (Ray ships it to the search algorithm). Never raises KeyError/AttributeError: Ray
    would retry the call with a legacy argument and hide the reason.
    """

    stage: str
    match: list[str]
    mode: str
    candidates: list[StageCheckpoint]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        want = {k: get_path(config, k) for k in self.match}
        fitting = [
            c for c in self.candidates if all(get_path(c.config, k) == v for k, v in want.items())
        ]
        usable = [c for c in fitting if c.path is not None]
        if not usable:
            what = ", ".join(f"{k}={v!r}" for k, v in want.items()) or "any settings"
            why = "; ".join(f"trial {c.trial_id}: {c.error}" for c in fitting) or "no trial ran"
            start = StartConfig(
                stage=self.stage,
                trial_id=fitting[0].trial_id if len(fitting) == 1 else None,
                checkpoint=None,
                error=f"no checkpoint from stage {self.stage!r} for {what} ({why})",
            )
            return start.model_dump()
        sign = 1.0 if self.mode == "max" else -1.0

        def rank(c: StageCheckpoint) -> float:
            return -math.inf if c.score is None or math.isnan(c.score) else sign * c.score

        best = max(usable, key=rank)
        return StartConfig(
            stage=self.stage, trial_id=best.trial_id, checkpoint=best.path
        ).model_dump()


def load_result_grid(experiment_path: str | Path) -> Any:
    """The Ray Tune ResultGrid of a finished experiment directory."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(ExperimentAnalysis(str(experiment_path)))


def collect_checkpoints(result_grid: Any, metric: str, mode: str) -> list[StageCheckpoint]:
    """Each trial of a Ray Tune ResultGrid with its best checkpoint by `metric`, or why it has none.

    A trial that ended in an error hands on nothing: its checkpoints are of an unfinished run.
    """
    from trainables.models.checkpoints import CHECKPOINT_FILE

    out = []
    for result in result_grid:
        config = dict(result.config or {})
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path or "?").name)
        if result.error is not None:
            reason = str(result.error).strip().splitlines()[-1][:200]
            out.append(StageCheckpoint(trial_id, config, None, None, f"it failed: {reason}"))
            continue
        try:
            best = result.get_best_checkpoint(metric, mode)
        except RuntimeError:  # Ray's way of saying: no checkpoint, or none with this metric
            best = None
        if best is None:
            error = (
                f"none of its checkpoints reported {metric}"
                if result.best_checkpoints
                else "it reported no checkpoint"
            )
            out.append(StageCheckpoint(trial_id, config, None, None, error))
            continue
        score = next((m.get(metric) for c, m in result.best_checkpoints if c is best), None)
        path = str(Path(best.path) / CHECKPOINT_FILE)
        out.append(
            StageCheckpoint(
                trial_id, config, path, float(score) if isinstance(score, int | float) else None
            )
        )
    return out


def _check_source(spec: StageSpec, where: str, earlier: list[str]) -> StageSource | None:
    link = spec.from_
    if link is not None and link.stage not in earlier:
        raise SweepError(
            f"{where}.from.stage: {link.stage!r} is not an earlier stage "
            f"(earlier: {', '.join(earlier) or 'none'}); a stage can start only from one run before it"
        )
    return link


def _merge(base: dict[str, Any], over: dict[str, Any], path: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if path == "search" and value is None:
            out.pop(key, None)  # `search: {key: null}` drops a key the sweep searches
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, f"{path}.{key}" if path else key)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _grid_keys(sweep: SweepConfig) -> set[str]:
    return {k for k, s in sweep.search.items() if s.kind == "grid"}


def _match_keys(
    stage: SweepConfig, producer: SweepConfig, link: StageSource, where: str
) -> list[str]:
    if link.match is None:
        return sorted(_grid_keys(stage) & _grid_keys(producer))
    base = stage.trial_dict()
    bad = [k for k in link.match if not has_path(base, k) and k not in stage.search]
    if bad:
        raise SweepError(
            f"{where}.from.match: {bad} are not trial keys (e.g. model.name, optim.lr)"
        )
    return list(link.match)


def _explicit_checkpoint(sweep: SweepConfig) -> set[str]:
    return (
        set(sweep.checkpoint.model_fields_set) if "checkpoint" in sweep.model_fields_set else set()
    )


def _rank_checkpoints(
    producer: Stage,
    *,
    producer_spec: StageSpec,
    link: StageSource,
    base_checkpoint_set: set[str],
    where: str,
) -> None:
    """Make the earlier stage keep checkpoints ranked by the metric the later one picks by."""
    ck = producer.sweep.checkpoint
    if not ck.enabled:
        raise SweepError(
            f"{where}.from: stage {producer.name!r} has checkpoint.enabled: false, so it leaves no "
            "checkpoint to start from; enable it"
        )
    if producer.ranked_by is not None and producer.ranked_by != (link.metric, link.mode):
        metric, mode = producer.ranked_by
        raise SweepError(
            f"{where}.from: stage {producer.name!r} already hands its best checkpoint by "
            f"{metric} ({mode}) to another stage; every stage that starts from it must use "
            f"the same metric and mode (got {link.metric} ({link.mode}))"
        )
    producer.ranked_by = (link.metric, link.mode)
    own = producer_spec.overrides.get("checkpoint")
    explicit = set(base_checkpoint_set) | set(own.keys() if isinstance(own, dict) else ())
    for key, want in (("metric", link.metric), ("mode", link.mode)):
        have = getattr(ck, key)
        if have != want and key in explicit:
            raise SweepError(
                f"{where}.from.{key}: {want!r}, but stage {producer.name!r} ranks its checkpoints "
                f"by checkpoint.{key}: {have!r} and keeps only its best; make them agree"
            )
        setattr(ck, key, want)


def run_plan(
    plan: list[Stage],
    *,
    output: Path,
    sweep_text: str,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    verbose: int = 1,
    storage: str | None = None,
    retry_failed: bool = False,
) -> list[Any]:
    """Run the plan on Ray Tune: one `run_sweep` per stage, in order; their `SweepOutcome`s.

    With --resume, the first stage restores its experiment (an error when there is none); a later
    stage restores its own when the interrupted run reached it, and starts fresh otherwise.
    """
    from orchestrator.driver.sweep_runner import experiment_dirs, run_sweep, stage_run_name

    output = output.resolve()

    def run_one(stage: Stage, overrides: dict[str, Any]) -> Any:
        if verbose and stage.name is not None:
            origin = f", starting from stage {stage.source.stage!r}" if stage.source else ""
            print(f"== stage {stage.name!r}: trainable {stage.sweep.trainable}{origin}", flush=True)
        first = stage is plan[0]
        return run_sweep(
            stage.sweep,
            output=output,
            sweep_text=sweep_text,
            address=address,
            resume=resume
            and (first or bool(experiment_dirs(output, stage_run_name(stage.sweep), storage))),
            tracking_uri=tracking_uri,
            verbose=verbose,
            space_overrides=overrides,
            storage=storage,
            retry_failed=retry_failed,
        )

    def collect(outcome: Any, metric: str, mode: str) -> list[StageCheckpoint]:
        grid = getattr(outcome, "results", None) or load_result_grid(outcome.experiment_path)
        return collect_checkpoints(grid, metric, mode)

    return run_stages(plan, run_one, collect)
