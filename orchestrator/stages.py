"""Multi-stage sweeps: `stages:` run in order; a stage may start from an earlier stage's best checkpoint.

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

Each stage is the sweep's top-level keys with the stage's own keys merged over them (mappings merge
key by key; lists and scalars replace; in `search`, `key: null` drops a searched key), validated
as a sweep of its own whose `stage` is the stage's name. Each stage runs as its own Ray Tune
experiment and MLflow parent run; its rows carry the `stage` column.

`from:` (a stage name, or `{stage, metric, mode, match}`) links trials: a trial of the later stage
starts from (`model.pretrained` = the checkpoint's path) the best checkpoint, by `metric`, among the
earlier stage's trials whose values of the `match` keys equal its own. `match` defaults to the grid
keys both stages search (`model.name` above: each model fine-tunes its own pretraining); with no
shared key, every trial starts from the earlier stage's single best checkpoint. The earlier stage
keeps its checkpoints ranked by that metric. A later trial whose earlier counterpart left no
checkpoint (it failed) fails with a message that says so; the sweep goes on.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from orchestrator.sweep_schema import (
    SweepConfig,
    SweepError,
    apply_smoke,
    get_path,
    validate_sweep_dict,
)
from trainables.checkpoints import CHECKPOINT_FILE
from trainables.trial_config import Strict

STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# The key a linked stage's trials receive their starting checkpoint in.
START_KEY = "model.pretrained"


class StageSource(Strict):
    """`from:` of a stage: which earlier stage, ranked by what, matched on which keys."""

    stage: str = Field(description="name of an earlier stage")
    metric: str = Field("val/acc", description="metric that ranks the earlier stage's checkpoints")
    mode: Literal["max", "min"] = "max"
    match: list[str] | None = Field(
        None, description="keys whose values must agree (default: grid keys both stages search)"
    )


@dataclass
class Stage:
    name: str
    sweep: SweepConfig
    source: StageSource | None = None
    match: list[str] = field(default_factory=list)
    # (metric, mode) a later stage picks this stage's checkpoints by, once one does.
    ranked_by: tuple[str, str] | None = None


@dataclass
class StageCheckpoint:
    """One earlier-stage trial's best checkpoint."""

    trial_id: str
    config: dict[str, Any]
    path: str | None
    score: float | None
    error: str | None = None


def build_stages(
    sweep: SweepConfig,
    *,
    source: str = "<sweep>",
    adjust: Callable[[SweepConfig], SweepConfig] | None = None,
) -> list[Stage]:
    """Validate `sweep.stages` into runnable stage sweeps (SweepError naming `stages[i]...`).

    `adjust` runs on each stage's sweep after the merge: what the CLI did to the whole sweep
    (--no-pretrained) must reach keys a stage sets itself. --smoke is re-applied on its own.
    """
    if not sweep.stages:
        return []
    base = sweep.model_dump(mode="json", exclude={"stages"})
    stages: list[Stage] = []
    for i, raw in enumerate(sweep.stages):
        where = f"{source}: stages[{i}]"
        if not isinstance(raw, dict):
            raise SweepError(f"{where}: a stage is a mapping with at least `name:`, got {raw!r}")
        raw = copy.deepcopy(raw)
        name = raw.pop("name", None)
        if not isinstance(name, str) or not STAGE_NAME.match(name):
            raise SweepError(
                f"{where}.name: give each stage a name of letters, digits, _ or - (got {name!r})"
            )
        where = f"{source}: stages[{i}] ({name})"
        if any(s.name == name for s in stages):
            raise SweepError(
                f"{where}.name: {name!r} is used by an earlier stage; names must differ"
            )
        if "stages" in raw:
            raise SweepError(f"{where}.stages: stages do not nest")
        link = _source(raw.pop("from", None), where, [s.name for s in stages])
        merged = _merge(base, raw)
        merged["stage"] = name
        stage_sweep = validate_sweep_dict(merged, source=where)
        if sweep.smoke:
            # After the merge: a stage's own epochs or batches must not escape --smoke.
            stage_sweep = apply_smoke(stage_sweep)
        if adjust is not None:
            stage_sweep = adjust(stage_sweep)
        stage = Stage(name=name, sweep=stage_sweep, source=link)
        if link is not None:
            producer = next(s for s in stages if s.name == link.stage)
            stage.match = _match_keys(stage_sweep, producer.sweep, link, where)
            _check_start_key_free(stage_sweep, where)
            _rank_checkpoints(
                producer,
                raw_producer=sweep.stages[stages.index(producer)],
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
        if any(s.source is not None and s.source.stage == stage.name for s in stages):
            ck = stage.sweep.checkpoint
            produced[stage.name] = collect(outcome, ck.metric, ck.mode)
    return outcomes


@dataclass
class CheckpointLookup:
    """Ray Tune `sample_from` function: a trial's config -> the checkpoint path it starts from.

    Picklable (Ray ships it to the search algorithm). Never raises KeyError/AttributeError: Ray
    would retry the call with a legacy argument and hide the reason.
    """

    stage: str
    match: list[str]
    mode: str
    candidates: list[StageCheckpoint]

    def __call__(self, config: dict[str, Any]) -> str:
        want = {k: get_path(config, k) for k in self.match}
        fitting = [
            c for c in self.candidates if all(get_path(c.config, k) == v for k, v in want.items())
        ]
        usable = [c for c in fitting if c.path is not None]
        if not usable:
            what = ", ".join(f"{k}={v!r}" for k, v in want.items()) or "any settings"
            why = "; ".join(f"{c.trial_id}: {c.error}" for c in fitting if c.error) or "none ran"
            # Not a file: loading it fails the trial with this text, the sweep goes on.
            return f"<no checkpoint from stage {self.stage!r} for {what} ({why})>".replace("/", "∕")
        sign = 1.0 if self.mode == "max" else -1.0

        def rank(c: StageCheckpoint) -> float:
            return -math.inf if c.score is None or math.isnan(c.score) else sign * c.score

        return max(usable, key=rank).path  # type: ignore[return-value]


def load_result_grid(experiment_path: str | Path) -> Any:
    """The Ray Tune ResultGrid of a finished experiment directory."""
    from ray.tune import ExperimentAnalysis, ResultGrid

    return ResultGrid(ExperimentAnalysis(str(experiment_path)))


def collect_checkpoints(result_grid: Any, metric: str, mode: str) -> list[StageCheckpoint]:
    """Each trial of a Ray Tune ResultGrid with its best checkpoint by `metric`."""
    out = []
    for result in result_grid:
        config = dict(result.config or {})
        trial_id = str((result.metrics or {}).get("trial_id") or Path(result.path or "?").name)
        best: tuple[str, float | None] | None = None
        for checkpoint, metrics in result.best_checkpoints or []:
            score = metrics.get(metric)
            score = float(score) if isinstance(score, int | float) else None
            better = best is None or (
                score is not None
                and (best[1] is None or (score > best[1] if mode == "max" else score < best[1]))
            )
            if better:
                best = (str(Path(checkpoint.path) / CHECKPOINT_FILE), score)
        error = None
        if result.error is not None:
            error = str(result.error).strip().splitlines()[-1][:200]
        elif best is None:
            error = "it reported no checkpoint"
        out.append(
            StageCheckpoint(
                trial_id=trial_id,
                config=config,
                path=best[0] if best else None,
                score=best[1] if best else None,
                error=error,
            )
        )
    return out


def _source(value: Any, where: str, earlier: list[str]) -> StageSource | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"stage": value}
    try:
        link = StageSource.model_validate(value)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            key = "from." + ".".join(str(p) for p in e["loc"])
            if e["type"] == "extra_forbidden":
                accepted = ", ".join(StageSource.model_fields)
                problems.append(f"{key}: unknown key (accepted: {accepted})")
            else:
                problems.append(f"{key}: {e['msg']} (got {e.get('input')!r})")
        raise SweepError(f"{where}: invalid `from`\n" + "\n".join(problems)) from err
    if link.stage not in earlier:
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
        elif isinstance(value, dict) and isinstance(out.get(key), dict) and key != "from":
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
    bad = [k for k in link.match if get_path(base, k) is None and k not in stage.search]
    if bad:
        raise SweepError(
            f"{where}.from.match: {bad} are not trial keys (e.g. model.name, optim.lr)"
        )
    return list(link.match)


def _check_start_key_free(stage: SweepConfig, where: str) -> None:
    parents = [k for k in stage.search if k == START_KEY or START_KEY.startswith(f"{k}.")]
    if parents:
        raise SweepError(
            f"{where}.search: a stage that starts from another's checkpoint sets {START_KEY} per "
            f"trial, so it cannot search {parents[0]!r} as a whole; search its keys instead "
            "(model.name, model.img_size, ...)"
        )


def _explicit_checkpoint(sweep: SweepConfig) -> set[str]:
    return (
        set(sweep.checkpoint.model_fields_set) if "checkpoint" in sweep.model_fields_set else set()
    )


def _rank_checkpoints(
    producer: Stage,
    *,
    raw_producer: dict[str, Any],
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
    explicit = set(base_checkpoint_set) | set((raw_producer.get("checkpoint") or {}).keys())
    for key, want in (("metric", link.metric), ("mode", link.mode)):
        have = getattr(ck, key)
        if have != want and key in explicit:
            raise SweepError(
                f"{where}.from.{key}: {want!r}, but stage {producer.name!r} ranks its checkpoints "
                f"by checkpoint.{key}: {have!r} and keeps only its best; make them agree"
            )
        setattr(ck, key, want)


def run_staged_sweep(
    sweep: SweepConfig,
    *,
    output: Path,
    sweep_text: str,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    verbose: int = 1,
    adjust: Callable[[SweepConfig], SweepConfig] | None = None,
) -> list[Any]:
    """The CLI's entry for a sweep with `stages:`: one `run_sweep` per stage, in order.

    Needs `run_sweep(..., space_overrides=...)` (dotted key -> Tune domain, set into the param
    space) and, when present, `SweepOutcome.results` (the ResultGrid); without it the
    experiment directory is read back. With --resume, each stage restores its own experiment.
    """
    from orchestrator.sweep_runner import experiment_dirs, run_sweep

    stages = build_stages(sweep, source=sweep.name, adjust=adjust)

    def run_one(stage: Stage, overrides: dict[str, Any]) -> Any:
        if verbose:
            origin = f", starting from stage {stage.source.stage!r}" if stage.source else ""
            print(f"== stage {stage.name!r}: trainable {stage.sweep.trainable}{origin}", flush=True)
        return run_sweep(
            stage.sweep,
            output=output,
            sweep_text=sweep_text,
            address=address,
            # A stage the killed run never reached starts fresh; the others restore.
            resume=resume and bool(experiment_dirs(output.resolve(), stage_run_name(stage.sweep))),
            tracking_uri=tracking_uri,
            verbose=verbose,
            space_overrides=overrides,
        )

    def collect(outcome: Any, metric: str, mode: str) -> list[StageCheckpoint]:
        grid = getattr(outcome, "results", None) or load_result_grid(outcome.experiment_path)
        return collect_checkpoints(grid, metric, mode)

    return run_stages(stages, run_one, collect)


def stage_run_name(sweep: SweepConfig) -> str:
    """The Ray Tune experiment name prefix of a (stage) sweep: `<sweep>-<stage>`, or `<sweep>`."""
    return sweep.name if sweep.stage is None else f"{sweep.name}-{sweep.stage}"
