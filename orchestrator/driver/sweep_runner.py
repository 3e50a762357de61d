"""Ray Tune wiring: one validated sweep -> Tuner(trainable, param_space, TuneConfig, RunConfig).

Trials run in reused worker processes, each from a clean start (`isolation: reuse`, the default),
or each in a fresh process (`isolation: process`); the MLflow and Parquet sinks run on the driver
as Tune callbacks, so a cluster needs no shared disk for results.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune.logger import JsonLoggerCallback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.driver.dotted_keys import set_path
from orchestrator.driver.interrupts import stop_requested
from orchestrator.driver.objectives import TrialEndFacts, mark_pareto_front
from orchestrator.driver.preflight import fit_resources
from orchestrator.driver.schema import SweepConfig, SweepError
from orchestrator.driver.search_space import param_space
from orchestrator.sinks.mlflow_runs import (
    TUNE_RUN_TAG,
    MlflowSink,
    default_tracking_uri,
    find_parent_run,
    preload_mlflow,
)
from orchestrator.sinks.parquet_rows import ParquetSink
from orchestrator.workers.train_workers import trial_demand, trial_trainable
from trainables.loop.reporting import FINAL_KEY

TUNE_DIR = "_tune"


@dataclass
class SweepOutcome:
    experiment_path: Path
    trial_ids: list[str]
    errors: dict[str, str]
    parent_run_id: str | None
    results: Any = None  # Ray Tune's ResultGrid
    # Ray Tune status per trial id (TERMINATED, ERROR, RUNNING, PENDING, PAUSED).
    statuses: dict[str, str] = field(default_factory=dict)
    stopped_by: int | None = (
        None  # the signal that stopped the sweep (orchestrator.driver.interrupts)
    )


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
    address = address or os.environ.get("RAY_ADDRESS") or None
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level="WARNING",
        # Workers' own output stays in Ray's session logs; the terminal shows the live table.
        log_to_driver=False,
        # A cluster's workers were started by `ray start`, not from this shell: the job's
        # runtime environment hands them the path to import lvmbench from (RAY_ADDRESS too).
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}} if address else None,
        # Opt-in (LVMBENCH_RAY_PRELOAD=1), a local node only: worker processes import what every
        # trial needs as they start (Ray's preload_python_modules). Off by default: measured on
        # 2 busy cores (benchmarks/startup.py --compare-preload) two workers importing torch at
        # once slowed the driver's Tune set-up more than the trial's start gained (31 s vs 21 s).
        _system_config=None if address else preload_config(),
    )


def shutdown_ray() -> None:
    """End this process's Ray session before the interpreter exits, without Ray's exit-time waits.

    At exit Ray's own hook sleeps 0.5 s (for log lines still in flight), then stops each of the
    node's processes with SIGTERM and up to 1 s of grace; the autoscaler monitor of a local node
    takes the whole second. Measured here (`benchmarks/startup.py`): ~2 s of every command's end.
    The monitor holds nothing a finished sweep needs, so it is killed first; the rest stop as Ray
    stops them. A session joined with `--address` is only disconnected, as before.
    """
    import ray

    if not ray.is_initialized():
        return
    # Ray's private handle on the node it started (None when joined with --address).
    node = getattr(getattr(getattr(ray, "_private", None), "worker", None), "_global_node", None)
    processes = getattr(node, "all_processes", None) or {}
    for info in processes.get("monitor", []):
        if info.process.poll() is None:
            info.process.kill()
            info.process.wait(timeout=5)
    ray.shutdown()


# What every trial imports; with the preload on, a local node's workers import it as they start.
PRELOAD_MODULES = (
    "torch",
    "timm",
    "accelerate",
    "orchestrator.workers.trial_runner",
    "trainables.loop.fit",
    "trainables.loop.profiling",
)
PRELOAD_ENV = "LVMBENCH_RAY_PRELOAD"  # "1" turns the preload on (benchmarks/startup.py compares)


def preload_config() -> dict[str, Any] | None:
    if os.environ.get(PRELOAD_ENV, "0") != "1":
        return None
    return {"preload_python_modules": list(PRELOAD_MODULES)}


RAY_LOG = "ray.log"
# Loggers whose records go to <output>/ray.log instead of the terminal while a sweep runs.
ROUTED_LOGGERS = ("ray", "mlflow", "alembic", "py.warnings")


def route_logs(log_file: Path) -> None:
    """Ray's, Tune's and MLflow's own warnings (token authentication, state snapshots, database
    set-up) and Python warnings go to `log_file`: while a sweep runs, the live table is what the
    terminal shows. Workers' output stays in Ray's session logs (`/tmp/ray/session_*/logs`)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    logging.captureWarnings(True)
    # MLflow is imported later (on a thread, while Ray starts): it must not then put its own
    # terminal handler back on the "mlflow" logger.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    mlflow_logger = logging.getLogger("mlflow")
    if mlflow_logger.level == logging.NOTSET:
        mlflow_logger.setLevel(logging.INFO)  # what MLflow's own configuration would set
    handler: logging.Handler | None = None
    for name in ROUTED_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if getattr(old, "baseFilename", None) == os.path.abspath(log_file):
                handler = old
            elif getattr(old, "lvmbench_route", False) or (
                isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler)
            ):
                # The terminal, or an earlier sweep's log file in this process.
                logger.removeHandler(old)
        if handler is None:
            handler = logging.FileHandler(log_file, encoding="utf-8")
            handler.lvmbench_route = True  # type: ignore[attr-defined]
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False


def stage_run_name(sweep: SweepConfig) -> str:
    """The Ray Tune experiment name prefix of a (stage) sweep: `<sweep>-<stage>`, or `<sweep>`."""
    return sweep.name if sweep.stage is None else f"{sweep.name}-{sweep.stage}"


def storage_root(output: Path, storage: str | None = None) -> str:
    """Ray Tune's storage path: `--storage` (a shared path or a pyarrow/fsspec URI), else
    `<output>/_tune`. Only checkpoints and Tune's experiment state go there; the sinks write
    the tables and MLflow from the driver."""
    if storage is None:
        return str(output.resolve() / TUNE_DIR)
    if "://" in storage:
        return storage.rstrip("/")
    return str(Path(storage).expanduser().resolve())


def experiment_dirs(output: Path, name: str, storage: str | None = None) -> list[str]:
    """Earlier runs of `name` (`<name>-<YYYYmmdd-HHMMSS>`) in the storage, oldest first."""
    import pyarrow as pa
    import pyarrow.fs as pafs

    root = storage_root(output, storage)
    try:
        fs, path = pafs.FileSystem.from_uri(root if "://" in root else Path(root).as_uri())
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (OSError, pa.ArrowException) as err:
        raise SweepError(f"--storage {root}: cannot list it ({err})") from err
    pattern = re.compile(re.escape(name) + r"-\d{8}-\d{6}")
    found = [
        i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and pattern.fullmatch(i.base_name)
    ]
    return [f"{root}/{n}" for n in sorted(found)]


def check_resources(sweep: SweepConfig, *, local: bool) -> SweepConfig:
    """A trial asking for more than the cluster has would wait forever: say so before it starts
    (`preflight.fit_resources` against what Ray counts; a local run was checked before Ray)."""
    import ray

    return fit_resources(sweep, ray.cluster_resources(), local=local)


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
    storage: str | None = None,
    retry_failed: bool = False,
) -> SweepOutcome:
    """Run one sweep (or one stage of a staged sweep) on Ray Tune.

    `space_overrides` (dotted key -> value or Tune domain) are set into the param space after the
    search: stages use it to hand each trial its `start` (see `orchestrator/driver/stages.py`).
    `retry_failed` (with `resume`) runs the errored trials again; without it they stay errored.
    """
    from ray import tune

    output = output.resolve()
    tracking_uri = tracking_uri or sweep.mlflow.tracking_uri or default_tracking_uri()
    restore_from = _interrupted_run(sweep, output, storage) if resume else None
    route_logs(output / RAY_LOG)
    # MLflow's imports (a second) overlap Ray's start; nothing is written before Tune starts.
    preload_mlflow()
    init_ray(address)
    sweep = check_resources(sweep, local=not (address or os.environ.get("RAY_ADDRESS")))
    trainable = trial_trainable(sweep.resources, max_failures=sweep.max_failures)
    if restore_from is not None:
        # Tune's restored run config carries its own pickled sinks; they find their MLflow runs
        # again by tags (`MlflowSink`).
        # --retry-failed: errored trials run again under their own trial id (one `trials` row,
        # one MLflow child), from their last checkpoint if they saved one. Tune's
        # restart_errored would give each a new id: a second row and a second child run.
        tuner = tune.Tuner.restore(
            restore_from, trainable, resume_unfinished=True, resume_errored=retry_failed
        )
        run_name = Path(restore_from).name
        parent = find_parent_run(tracking_uri, sweep.name, run_name)
        return _outcome(tuner.fit(), parent, sweep, output)
    run_name = f"{stage_run_name(sweep)}-{time.strftime('%Y%m%d-%H%M%S')}"
    mlflow_sink = _mlflow_sink(sweep, output, sweep_text, tracking_uri, run_name)
    run_config = _run_config(sweep, output, storage, run_name, mlflow_sink, verbose)
    tuner = tune.Tuner(
        trainable,
        param_space=_param_space(sweep, space_overrides),
        tune_config=_tune_config(sweep),
        run_config=run_config,
    )
    return _outcome(tuner.fit(), mlflow_sink.parent_run_id, sweep, output)


def _interrupted_run(sweep: SweepConfig, output: Path, storage: str | None) -> str:
    """`--resume`: the latest run of this sweep in the storage, which Tune can restore."""
    from ray import tune

    found = experiment_dirs(output, stage_run_name(sweep), storage)
    if not found or not tune.Tuner.can_restore(found[-1]):
        raise SweepError(
            f"--resume: no interrupted sweep named {sweep.name!r} under "
            f"{storage_root(output, storage)}; run it without --resume first"
        )
    return found[-1]


def _mlflow_sink(
    sweep: SweepConfig, output: Path, sweep_text: str, tracking_uri: str, run_name: str
) -> MlflowSink:
    return MlflowSink(
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
            TUNE_RUN_TAG: run_name,
            **({"mlflow.source.git.commit": sha} if (sha := git_sha()) else {}),
        },
    )


def _run_config(
    sweep: SweepConfig,
    output: Path,
    storage: str | None,
    run_name: str,
    mlflow_sink: MlflowSink,
    verbose: int,
) -> Any:
    from ray import tune

    checkpoint = sweep.checkpoint
    return tune.RunConfig(
        name=run_name,
        storage_path=storage_root(output, storage),
        failure_config=tune.FailureConfig(max_failures=sweep.max_failures),
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=checkpoint.num_to_keep,
            # None = keep the most recent ones.
            checkpoint_score_attribute=checkpoint.metric if checkpoint.keep == "best" else None,
            checkpoint_score_order=checkpoint.mode,
        ),
        callbacks=[
            # First: it adds the driver's trial-end facts (cost/usd) before the sinks read them.
            TrialEndFacts(sweep.cost, trial_demand(sweep.resources)),
            ParquetSink(output, sweep.name),
            mlflow_sink,
            JsonLoggerCallback(),
        ],
        progress_reporter=live_table(sweep),
        verbose=verbose,
    )


def _param_space(sweep: SweepConfig, overrides: dict[str, Any] | None) -> dict[str, Any]:
    space = param_space(sweep)
    for key, value in (overrides or {}).items():
        set_path(space, key, value)
    return space


def _tune_config(sweep: SweepConfig) -> Any:
    from ray import tune

    return tune.TuneConfig(
        num_samples=sweep.num_samples,
        scheduler=_scheduler(sweep),
        search_alg=_search_alg(sweep),
        max_concurrent_trials=sweep.max_concurrent_trials,
        # A worker imports torch and timm once and runs trial after trial, each from a clean
        # start (trainables.loop.scope); `isolation: process` gives each its own.
        reuse_actors=sweep.isolation == "reuse",
    )


def _outcome(
    results: Any, parent_run_id: str | None, sweep: SweepConfig, output: Path
) -> SweepOutcome:
    trial_ids, errors = [], {}
    statuses = trial_statuses(results)
    for result in results:
        trial_id = result.metrics.get("trial_id") if result.metrics else None
        if trial_id is None and result.path:
            trial_id = Path(result.path).name
        trial_ids.append(str(trial_id))
        if result.error is not None:
            errors[str(trial_id)] = str(result.error).strip().splitlines()[-1][:300]
    if sweep.searcher.objectives:
        mark_pareto_front(output, sweep.name, trial_ids, sweep.searcher.objectives)
    return SweepOutcome(
        experiment_path=Path(results.experiment_path),
        trial_ids=trial_ids,
        errors=errors,
        parent_run_id=parent_run_id,
        results=results,
        statuses=statuses,
        stopped_by=stop_requested(),
    )


def trial_statuses(results: Any) -> dict[str, str]:
    """Ray Tune's status of every trial of a ResultGrid, those that never started included."""
    analysis = getattr(results, "_experiment_analysis", None)
    return {str(t.trial_id): str(t.status) for t in getattr(analysis, "trials", None) or []}


LIVE_METRICS = {
    "epoch": "epoch",
    "val/acc": "val/acc",
    "val/f1_macro": "F1",
    "time/epoch_s": "epoch s",
    "time/samples_per_s": "samples/s",
}


def live_table(sweep: SweepConfig) -> Any:
    """The table Ray prints while the sweep runs: searched params and a few key metrics."""
    from orchestrator.driver.live_table import LiveTable

    params = {}
    for key in sweep.search:
        # Tune flattens the config with "/"; a searched section shows by its name field.
        column = key.replace(".", "/") + ("/name" if key in ("model", "dataset", "optim") else "")
        params[column] = key
    return LiveTable(
        metric_columns=LIVE_METRICS,
        parameter_columns=params or {"model/name": "model"},
        max_report_frequency=15,
        max_column_length=24,
    )


def _search_alg(sweep: SweepConfig) -> Any:
    # Imported here: Optuna loads only for a sweep that searches with it.
    from orchestrator.driver.searchers import search_alg

    return search_alg(sweep)


class TrialEndASHA(ASHAScheduler):
    """ASHA that lets every trial that trains to its end send its trial-end report.

    Ray's ASHA stops a trial whose iteration reaches `max_t` (the epoch count); the trial-end
    report (`time/total_s`, `merged/*`, `recovered/*`) comes after the last epoch and would be
    lost. Here neither the `max_t`-th report nor a trial-end report is judged: a trial at its
    last epoch ends by itself, after that report. Stops at the rungs before are ASHA's own (such
    a trial keeps the running times of its last epoch report).
    """

    def __init__(self, *, max_t: int, **kwargs: Any) -> None:
        super().__init__(time_attr="training_iteration", max_t=max_t, **kwargs)
        self.last_iteration = max_t

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        if result.get(FINAL_KEY) or result.get("training_iteration") == self.last_iteration:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


def _scheduler(sweep: SweepConfig) -> Any:
    if sweep.scheduler is None:
        return None
    s = sweep.scheduler
    return TrialEndASHA(
        metric=s.metric,
        mode=s.mode,
        max_t=max(sweep.optim.epochs, s.grace_period),
        grace_period=s.grace_period,
        reduction_factor=s.reduction_factor,
    )
