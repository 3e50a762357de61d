"""`python -m orchestrator trial SWEEP.yaml [--stage NAME] [--index N ...]`: one trial, here.

The sweep is validated, shrunk (`--smoke`) and checked for unreachable resources as a sweep run
would; then trial N of the stage's expanded trials (the order `validate` prints) runs in the
calling process, without Ray: breakpoints and `--pdb` work, and a machine without Ray (a lent
GPU box) can run it; several indices run one after another. Its rows go through the sweep's own
sinks (`ParquetSink`, and `MlflowSink` when MLflow is importable) into the same tables, under
`--output`, as a sweep's trial would.

Random search keys are drawn here, from `random.Random(seed + index)`. A stage that starts from
an earlier stage's checkpoints (`from:`) cannot run alone: run the sweep. The last checkpoint a
trial saved is kept under `<output>/_trials/<sweep>__<trial_id>/checkpoint/`.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.driver.objectives import add_trial_end_facts
from orchestrator.driver.schema import CostConfig, SearchSpec, SweepConfig, SweepError
from trainables.loop.reporting import FINAL_KEY, Reporter

EXIT_OK, EXIT_TRIAL_FAILED, EXIT_BAD_INPUT = 0, 1, 2
TRIALS_DIR = "_trials"


@dataclass
class LocalTrial:
    """What the sinks read of a Ray Tune trial."""

    trial_id: str
    config: dict[str, Any]
    path: str
    status: str = "RUNNING"
    error: str | None = None

    @property
    def error_file(self) -> str:
        return str(Path(self.path) / "error.txt")

    def get_error(self) -> str | None:
        return self.error


class SinkReporter(Reporter):
    """A `trainables.loop.reporting.Reporter` that hands each result to the sinks, as Tune would."""

    def __init__(
        self,
        trial: LocalTrial,
        sinks: list[Any],
        *,
        cost: CostConfig | None = None,
        demand: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.trial = trial
        self.sinks = sinks
        self.iteration = 0
        self.epoch_reports = 0
        self.checkpoint_dir: Path | None = None
        self.cost = cost
        self.demand = dict(demand or {})

    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        if checkpoint_dir is not None:
            keep = Path(self.trial.path) / "checkpoint"
            shutil.rmtree(keep, ignore_errors=True)
            shutil.copytree(checkpoint_dir, keep)
            self.checkpoint_dir = keep
        self.epoch_reports += not result.get(FINAL_KEY)
        self.iteration += 1
        result = {**result, "trial_id": self.trial.trial_id, "training_iteration": self.iteration}
        # What the driver derives from the trial-end report (cost/usd), as a sweep run adds it.
        add_trial_end_facts(result, self.cost, self.demand)
        for sink in self.sinks:
            sink.log_trial_result(self.iteration, self.trial, result)


def pick_trial(sweep: SweepConfig, index: int) -> dict[str, Any]:
    """The searched values of trial `index` (grid order as `validate` prints it)."""
    from orchestrator.driver.search_space import expand

    trials = expand(sweep)
    if not 0 <= index < len(trials):
        raise SweepError(
            f"--index {index}: this sweep{_stage_label(sweep)} has {len(trials)} trial(s), "
            f"numbered 0 to {len(trials) - 1} (`python -m orchestrator validate` lists them)"
        )
    params = {k: v for k, v in trials[index].items() if k != "sample"}
    rng = random.Random(sweep.seed + index)
    for key, spec in sweep.search.items():
        if spec.kind != "grid":
            params[key] = draw(spec, rng)
    return params


def draw(spec: SearchSpec, rng: random.Random) -> Any:
    """One value of a random search dimension (what Ray Tune would sample)."""
    value = spec.value
    if spec.kind == "choice":
        return rng.choice(list(value))
    if spec.kind == "uniform":
        return rng.uniform(*value)
    if spec.kind == "loguniform":
        lo, hi = value
        return math.exp(rng.uniform(math.log(lo), math.log(hi)))
    if spec.kind == "randint":
        return rng.randrange(*value)
    raise ValueError(f"search kind {spec.kind!r} is not random")


def _stage_label(sweep: SweepConfig) -> str:
    return f" (stage {sweep.stage!r})" if sweep.stage else ""


def _sinks(
    sweep: SweepConfig, output: Path, sweep_text: str, tracking_uri: str | None
) -> list[Any]:
    from orchestrator.sinks.parquet_rows import ParquetSink

    sinks: list[Any] = [ParquetSink(output, sweep.name)]
    try:
        import mlflow  # noqa: F401  (the sink imports it only when it first logs)

        from orchestrator.sinks.mlflow_runs import MlflowSink, default_tracking_uri
    except ImportError as err:
        print(f"mlflow: not logged ({err.name or err} is not importable); Parquet only", flush=True)
        return sinks
    uri = tracking_uri or sweep.mlflow.tracking_uri or default_tracking_uri()
    sinks.append(
        MlflowSink(
            tracking_uri=uri,
            sweep_name=sweep.name,
            sweep_file_text=sweep_text,
            sweep_params={
                "trainable": sweep.trainable,
                "smoke": sweep.smoke,
                "search": ", ".join(sweep.search) or "(none)",
                "output": str(output),
                "stage": sweep.stage or "",
                "single_trial": True,
            },
            tags={
                "lvmbench.sweep": sweep.name,
                "lvmbench.smoke": str(sweep.smoke).lower(),
                "lvmbench.stage": sweep.stage or "",
                "lvmbench.command": " ".join(sys.argv)[:5000],
            },
        )
    )
    return sinks


def run_single(
    sweep: SweepConfig,
    *,
    index: int,
    output: Path,
    sweep_text: str,
    tracking_uri: str | None = None,
    post_mortem: bool = False,
) -> tuple[LocalTrial, SinkReporter]:
    """Run trial `index` of `sweep` (one stage, already adjusted) here; returns it when done."""
    from orchestrator.driver.search_space import trial_config
    from trainables.registry import trainable

    output = output.resolve()
    config = trial_config(sweep, pick_trial(sweep, index))
    trial_id = f"{secrets.token_hex(3)[:5]}_{index:05d}"
    path = output / TRIALS_DIR / f"{sweep.name}__{trial_id}"
    path.mkdir(parents=True, exist_ok=True)
    trial = LocalTrial(trial_id=trial_id, config=config, path=str(path))
    sinks = _sinks(sweep, output, sweep_text, tracking_uri)
    reporter = SinkReporter(
        trial,
        sinks,
        cost=sweep.cost,
        demand={"CPU": sweep.resources.cpu, "GPU": sweep.resources.gpu},
    )
    _set_threads(sweep.resources.cpu)
    for sink in sinks:
        sink.log_trial_start(trial)
    try:
        trainable(config["trainable"])(config, reporter)
    except Exception:
        trial.status, trial.error = "ERROR", traceback.format_exc()
        Path(trial.error_file).write_text(trial.error, encoding="utf-8")
        if post_mortem:
            import pdb

            pdb.post_mortem(sys.exc_info()[2])
    else:
        trial.status = "TERMINATED"
    for sink in sinks:
        sink.log_trial_end(trial, failed=trial.status == "ERROR")
        if hasattr(sink, "on_experiment_end"):
            sink.on_experiment_end([trial])
    return trial, reporter


def _set_threads(cpus: float) -> None:
    """One torch thread per core the trial asks for, as a Ray worker would get."""
    import torch

    torch.set_num_threads(max(1, min(int(cpus), os.cpu_count() or 1)))


def run(args: argparse.Namespace) -> int:
    """`python -m orchestrator trial` (its flags: `orchestrator.cli`)."""
    try:
        sweep, stage_count = _stage(args)
        for index in args.index:  # every pick checked before any trial runs
            pick_trial(sweep, index)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    where = f", stage {sweep.stage!r} of {stage_count}" if sweep.stage else ""
    failed = False
    for index in args.index:
        print(
            f"trial {index} of sweep {sweep.name!r}{where}: trainable {sweep.trainable}",
            flush=True,
        )
        trial, reporter = run_single(
            sweep,
            index=index,
            output=args.output,
            sweep_text=args.sweep.read_text(encoding="utf-8"),
            tracking_uri=args.tracking_uri,
            post_mortem=args.pdb,
        )
        print(f"trial {trial.trial_id}: {trial.status}, {reporter.epoch_reports} report(s)")
        print_trial_metrics(args.output.resolve(), sweep, trial.trial_id)
        if trial.error:
            failed = True
            print("\n".join(trial.error.strip().splitlines()[-5:]), file=sys.stderr)
    out = args.output.resolve()
    tables = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("_"))
    print(f"parquet: {out} ({', '.join(tables)}): one row per trial in {out / 'trials'}")
    return EXIT_TRIAL_FAILED if failed else EXIT_OK


def print_trial_metrics(output: Path, sweep: SweepConfig, trial_id: str) -> None:
    """The trial's final figures (its trainable's summary columns) and its caveats, from the
    row it wrote to the `trials` table."""
    import pandas as pd

    from orchestrator.driver.trial_columns import (
        COLUMNS_BY_TRAINABLE,
        PEAK_MEM,
        TRAIN_COLUMNS,
        peak_memory,
        sig,
    )
    from orchestrator.report.caveats import trial_caveats

    if not (output / "trials").is_dir():
        return
    rows = pd.read_parquet(output / "trials")
    rows = rows[(rows["sweep"] == sweep.name) & (rows["trial_id"] == trial_id)]
    if rows.empty:
        return
    row = rows.iloc[-1]
    cells = []
    for key, header, scale in COLUMNS_BY_TRAINABLE.get(sweep.trainable, TRAIN_COLUMNS):
        value = peak_memory(row) if key == PEAK_MEM else row.get(key)
        if isinstance(value, int | float) and value == value:
            cells.append(f"{header} {sig(value * scale)}")
    if cells:
        print("  " + ", ".join(cells))
    for caveat in trial_caveats(row):
        print(f"  warning: {caveat.flag}: {caveat.text}")


def _stage(args: argparse.Namespace) -> tuple[SweepConfig, int]:
    """The stage to run, validated and adjusted as `python -m orchestrator` would."""
    from orchestrator.driver.offline import check_offline
    from orchestrator.driver.schema import load_sweep
    from orchestrator.driver.smoke import apply_smoke
    from orchestrator.driver.stages import build_plan

    sweep = load_sweep(args.sweep)
    if args.smoke:
        sweep = apply_smoke(sweep)

    def adjust(s: SweepConfig) -> SweepConfig:
        return check_offline(s, swap_weights=args.no_pretrained or s.smoke, swap_data=s.smoke)

    # Only the chosen stage is adjusted: another stage's missing data must not stop this one.
    plan = build_plan(sweep, source=str(args.sweep))
    names = [s.name for s in plan if s.name]
    if args.stage is None:
        stage = plan[0]
    else:
        found = [s for s in plan if s.name == args.stage]
        if not found:
            raise SweepError(
                f"--stage {args.stage!r}: {args.sweep} has "
                + (f"the stages {', '.join(names)}" if names else "no stages:")
            )
        stage = found[0]
    if stage.source is not None:
        raise SweepError(
            f"--stage {stage.name!r} starts from stage {stage.source.stage!r}'s checkpoints, which "
            "only a sweep run hands on; run the sweep (python -m orchestrator SWEEP.yaml)"
        )
    return adjust(stage.sweep), len(plan)
