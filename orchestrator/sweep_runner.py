"""Ray Tune wiring: one validated sweep -> Tuner(trainable, param_space, TuneConfig, RunConfig).

Trials run in fresh worker processes (no actor reuse: clean measurements); the MLflow and Parquet
sinks run on the driver as Tune callbacks, so a cluster needs no shared disk for results.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.logger import JsonLoggerCallback

from orchestrator.dotted_keys import set_path
from orchestrator.mlflow_sink import MlflowSink, default_tracking_uri
from orchestrator.parquet_sink import ParquetSink
from orchestrator.search_space import param_space
from orchestrator.sweep_schema import SweepConfig, SweepError
from orchestrator.trial_runner import run_trial

TUNE_DIR = "_tune"


@dataclass
class SweepOutcome:
    experiment_path: Path
    trial_ids: list[str]
    errors: dict[str, str]
    parent_run_id: str | None
    results: Any = None  # Ray Tune's ResultGrid


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    # Tune's CSV/TensorBoard loggers duplicate what the sinks write; its JSON one is added by hand.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # The classic reporter prints one compact live table with the columns we choose; the newer
    # one prints every result of every metric, which buries the table under ~100 lines per epoch.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Workers must import our packages from this checkout even when it is not installed.
    root = str(Path(__file__).resolve().parent.parent)
    pythonpath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    os.environ["PYTHONPATH"] = pythonpath
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or None,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}} if address else None,
    )


def stage_run_name(sweep: SweepConfig) -> str:
    """The Ray Tune experiment name prefix of a (stage) sweep: `<sweep>-<stage>`, or `<sweep>`."""
    return sweep.name if sweep.stage is None else f"{sweep.name}-{sweep.stage}"


def experiment_dirs(output: Path, name: str) -> list[Path]:
    """Earlier runs of `name` (`<name>-<YYYYmmdd-HHMMSS>`), oldest first."""
    root = output / TUNE_DIR
    if not root.is_dir():
        return []
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}")
    found = [p for p in root.iterdir() if p.is_dir() and pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name)


def check_resources(sweep: SweepConfig, *, local: bool) -> SweepConfig:
    """A trial asking for more than the cluster has would wait forever: say so before it starts."""
    import ray

    have = ray.cluster_resources()
    problems = []
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        want = getattr(sweep.resources, key)
        avail = float(have.get(ray_key, 0.0))
        if want > avail:
            problems.append((key, want, avail))
    if not problems or not local:
        for key, want, avail in problems:
            print(f"warning: resources.{key}: {want} per trial, the cluster has {avail} now")
        return sweep
    if sweep.smoke:
        out = sweep.model_copy(deep=True)
        for key, want, avail in problems:
            # A smoke run proves the sweep runs here; it takes what this machine has.
            capped = avail if key == "gpu" else max(1.0, avail)
            print(f"smoke: resources.{key} {want} -> {capped} (this machine has {avail})")
            setattr(out.resources, key, capped)
        return out
    key, want, avail = problems[0]
    raise SweepError(
        f"resources.{key}: each trial asks for {want} but this machine has {avail}; lower "
        f"resources.{key} (fractions share a device) or join a cluster with --address"
    )


def run_sweep(
    sweep: SweepConfig,
    *,
    output: Path,
    sweep_text: str,
    address: str | None = None,
    resume: bool = False,
    tracking_uri: str | None = None,
    verbose: int = 1,
    space_overrides: dict[str, Any] | None = None,
) -> SweepOutcome:
    """Run one sweep (or one stage of a staged sweep) on Ray Tune.

    `space_overrides` (dotted key -> value or Tune domain) are set into the param space after the
    search: stages use it to hand each trial its `start` (see `orchestrator/stages.py`).
    """
    from ray import tune

    output = output.resolve()
    tracking_uri = tracking_uri or sweep.mlflow.tracking_uri or default_tracking_uri()
    restore_from: Path | None = None
    if resume:
        found = experiment_dirs(output, stage_run_name(sweep))
        if not found or not tune.Tuner.can_restore(str(found[-1])):
            raise SweepError(
                f"--resume: no interrupted sweep named {sweep.name!r} under {output / TUNE_DIR}; "
                "run it without --resume first"
            )
        restore_from = found[-1]

    init_ray(address)
    sweep = check_resources(sweep, local=not (address or os.environ.get("RAY_ADDRESS")))
    trainable = tune.with_resources(
        run_trial, {"cpu": sweep.resources.cpu, "gpu": sweep.resources.gpu}
    )
    mlflow_sink = MlflowSink(
        tracking_uri=tracking_uri,
        sweep_name=sweep.name,
        sweep_file_text=sweep_text,
        sweep_params={
            "trainable": sweep.trainable,
            "num_samples": sweep.num_samples,
            "search": ", ".join(sweep.search) or "(none)",
            "smoke": sweep.smoke,
            "output": str(output),
            "stage": sweep.stage or "",
        },
        tags={
            "lvmbench.sweep": sweep.name,
            "lvmbench.smoke": str(sweep.smoke).lower(),
            "lvmbench.stage": sweep.stage or "",
            "lvmbench.command": " ".join(sys.argv)[:5000],
            **({"mlflow.source.git.commit": sha} if (sha := git_sha()) else {}),
        },
    )
    if restore_from is not None:
        tuner = tune.Tuner.restore(
            str(restore_from), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        checkpoint = sweep.checkpoint
        run_config = tune.RunConfig(
            name=f"{stage_run_name(sweep)}-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(output / TUNE_DIR),
            failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=checkpoint.num_to_keep,
                # None = keep the most recent ones.
                checkpoint_score_attribute=checkpoint.metric if checkpoint.keep == "best" else None,
                checkpoint_score_order=checkpoint.mode,
            ),
            callbacks=[ParquetSink(output, sweep.name), mlflow_sink, JsonLoggerCallback()],
            progress_reporter=live_table(sweep),
            verbose=verbose,
        )
        space = param_space(sweep)
        for key, value in (space_overrides or {}).items():
            set_path(space, key, value)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=sweep.num_samples,
                scheduler=_scheduler(sweep),
                max_concurrent_trials=sweep.max_concurrent_trials,
                reuse_actors=False,
            ),
            run_config=run_config,
        )
    results = tuner.fit()
    trial_ids, errors = [], {}
    for result in results:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        if trial_id is None and result.path:
            trial_id = Path(result.path).name
        trial_ids.append(str(trial_id))
        if result.error is not None:
            errors[str(trial_id)] = str(result.error).strip().splitlines()[-1][:300]
    return SweepOutcome(
        experiment_path=Path(results.experiment_path),
        trial_ids=trial_ids,
        errors=errors,
        parent_run_id=mlflow_sink.parent_run_id,
        results=results,
    )


LIVE_METRICS = {
    "epoch": "epoch",
    "val/acc": "val/acc",
    "val/f1_macro": "F1",
    "time/epoch_s": "epoch s",
    "time/samples_per_s": "samples/s",
}


def live_table(sweep: SweepConfig) -> Any:
    """The table Ray prints while the sweep runs: searched params and a few key metrics."""
    from ray.tune import CLIReporter

    params = {}
    for key in sweep.search:
        # Tune flattens the config with "/"; a searched section shows by its name field.
        column = key.replace(".", "/") + ("/name" if key in ("model", "dataset", "optim") else "")
        params[column] = key
    return CLIReporter(
        metric_columns=LIVE_METRICS,
        parameter_columns=params or {"model/name": "model"},
        max_report_frequency=15,
        max_column_length=24,
    )


def _scheduler(sweep: SweepConfig) -> Any:
    if sweep.scheduler is None:
        return None
    from ray.tune.schedulers import ASHAScheduler

    s = sweep.scheduler
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=s.metric,
        mode=s.mode,
        max_t=max(sweep.optim.epochs, s.grace_period),
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )
