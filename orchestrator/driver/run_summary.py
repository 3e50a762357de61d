"""The table printed when a sweep ends: one table for the whole sweep (a stage column when it has
stages), one line per trial with the columns its trainable is studied by, the caveats that make a
number mean less (`orchestrator.report.caveats`), trials still pending, and where to look next.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.table import Table

from orchestrator.driver.schema import SweepConfig
from orchestrator.driver.trial_columns import (
    COLUMNS_BY_TRAINABLE,
    NOT_STARTED,
    PEAK_MEM,
    STOPPED,
    TRAIN_COLUMNS,
    peak_memory,
    sig,
)
from orchestrator.report.caveats import caveat_flags, group_caveats, trial_caveats
from orchestrator.sinks.mlflow_runs import default_tracking_uri

if TYPE_CHECKING:
    from orchestrator.driver.sweep_runner import SweepOutcome


def trials_frame(output: Path, sweep_name: str, trial_ids: list[str]) -> pd.DataFrame:
    path = output / "trials"
    if not path.is_dir():
        return pd.DataFrame()
    df = pd.read_parquet(path)
    return df[(df["sweep"] == sweep_name) & df["trial_id"].isin(trial_ids)]


def summary_frame(plan: list[Any], outcomes: list[SweepOutcome], output: Path) -> pd.DataFrame:
    """Every trial of the plan, run or not: its trials-table row, or its id and status alone."""
    frames = []
    for stage, outcome in zip(plan, outcomes, strict=False):
        df = trials_frame(output, stage.sweep.name, list(outcome.statuses) or outcome.trial_ids)
        if "stage" in df and stage.name is not None:
            df = df[df["stage"].astype("string").fillna("") == stage.name]
        df = df.copy()
        stopped = outcome.stopped_by is not None
        if stopped and "status" in df:
            # Ended by Ctrl-C / SIGTERM mid-way: neither running any more nor finished.
            unfinished = df["status"].isin(["RUNNING", "PAUSED", "PENDING"])
            df.loc[unfinished, "status"] = STOPPED
        seen = set(df["trial_id"]) if "trial_id" in df else set()
        missing = [
            {
                "trial_id": t,
                "status": NOT_STARTED if stopped or s == NOT_STARTED else s,
                "trainable": stage.sweep.trainable,
            }
            for t, s in outcome.statuses.items()
            if t not in seen
        ]
        df = pd.concat([df, pd.DataFrame(missing)], ignore_index=True) if missing else df
        df["stage"] = stage.name or ""
        df["trainable"] = df.get("trainable", stage.sweep.trainable)
        frames.append(df)
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _columns(df: pd.DataFrame) -> list[tuple[str, str, float]]:
    out: list[tuple[str, str, float]] = []
    trainables = list(dict.fromkeys(df["trainable"].dropna().astype(str))) if len(df) else []
    for trainable in trainables:
        for spec in COLUMNS_BY_TRAINABLE.get(trainable, TRAIN_COLUMNS):
            if spec[0] in (c[0] for c in out):
                continue
            if spec[0] == PEAK_MEM or (spec[0] in df and df[spec[0]].notna().any()):
                out.append(spec)
    return out


def _searched(plan: list[Any], df: pd.DataFrame) -> list[str]:
    keys: list[str] = []
    for stage in plan:
        for k in stage.sweep.search:
            col = k if k in df.columns else f"{k}.name"
            if col not in keys:
                keys.append(col)
    return keys or ["model.name"]


def _expected(stage: Any) -> int:
    from orchestrator.driver.search_space import expand

    return len(expand(stage.sweep))


def _not_run(
    plan: list[Any], outcomes: list[SweepOutcome], df: pd.DataFrame
) -> list[tuple[str, int]]:
    """(stage, trials never created): stages not reached, and trials Tune had not yet drawn
    (it creates them as slots free up) when the sweep was stopped."""
    out = []
    for i, stage in enumerate(plan):
        name = stage.name or stage.sweep.name
        if i >= len(outcomes):
            out.append((name, _expected(stage)))
            continue
        have = int((df["stage"] == (stage.name or "")).sum()) if "stage" in df else len(df)
        if outcomes[i].stopped_by is not None and _expected(stage) > have:
            out.append((name, _expected(stage) - have))
    return out


def print_run_summary(
    plan: list[Any],
    outcomes: list[SweepOutcome],
    output: Path,
    *,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> None:
    """One table for the plan's trials (every stage), their caveats, and where the results are."""
    # Wide enough for the table even when stdout is a pipe (CI logs, `| tee`).
    console = console or Console(width=max(Console().width, 200))
    sweep: SweepConfig = plan[0].sweep
    df = summary_frame(plan, outcomes, output)
    staged = any(s.name for s in plan)
    stages = f" (stages: {', '.join(str(s.name) for s in plan)})" if staged else ""
    counts = Counter(df["status"].astype(str)) if "status" in df else Counter()
    not_run = _not_run(plan, outcomes, df)
    pending = counts.pop(NOT_STARTED, 0) + sum(n for _, n in not_run)
    tally = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    tally += f", {pending} pending" if pending else ""
    smoke = " [smoke]" if sweep.smoke else ""
    table = Table(
        box=box.SIMPLE_HEAD,
        title=f"sweep {sweep.name}{stages}: {len(df) + sum(n for _, n in not_run)} "
        f"trial(s): {tally or 'none ran'}{smoke}",
    )
    searched = _searched(plan, df)
    metric_specs = _columns(df)
    flags = caveat_flags(df) if len(df) else pd.Series(dtype="string")
    head = ["trial", *(["stage"] if staged else []), *searched, "status", "epochs"]
    for header in head:
        table.add_column(header, no_wrap=True)
    for spec in metric_specs:
        table.add_column(spec[1], justify="right", no_wrap=True)
    if flags.astype(bool).any():
        table.add_column("caveats", no_wrap=True)
    rank = {s.name or "": i for i, s in enumerate(plan)}
    order = df.assign(_o=df["stage"].map(rank)).sort_values(["_o", "trial_id"]) if len(df) else df
    for idx, row in order.iterrows():
        cells = [str(row["trial_id"]), *([str(row["stage"])] if staged else [])]
        cells += [sig(row.get(k)) if k in row else "-" for k in searched]
        cells += [str(row.get("status")), sig(row.get("epochs_completed"))]
        for key, _, scale in metric_specs:
            value = peak_memory(row) if key == PEAK_MEM else row.get(key)
            cells.append(sig(value * scale if isinstance(value, int | float) else value))
        if flags.astype(bool).any():
            cells.append(str(flags.get(idx, "")))
        table.add_row(*cells)
    console.print(table)
    _print_caveats(console, plan, df)
    for stage_name, n in not_run:
        console.print(f"{stage_name}: {n} more trial(s) pending, not started")
    for outcome in outcomes:
        for trial_id, error in outcome.errors.items():
            console.print(f"[red]trial {trial_id} failed:[/red] {error}")
    uri = tracking_uri or sweep.mlflow.tracking_uri or default_tracking_uri()
    console.print(
        f"tables:  pandas.read_parquet('{output / 'epochs'}')  (also trials/, latency/ ...)"
    )
    console.print(f"mlflow:  {mlflow_command()} ui --backend-store-uri {uri}")
    link = runs_link(uri, sweep.name)
    if link:
        # MLflow 3 opens an experiment on its GenAI overview ("0 traces"): link the runs view.
        console.print(f"         then open {link}")
    console.print(f"report:  python -m orchestrator report {output}")


def _print_caveats(console: Console, plan: list[Any], df: pd.DataFrame) -> None:
    if df.empty:
        return
    seen: set[str] = set()
    for _, row in df.iterrows():
        for caveat in trial_caveats(row):
            line = f"trial {row['trial_id']}: {caveat.flag}: {caveat.text}"
            if caveat.flag == "substituted":
                line = f"{caveat.flag}: {caveat.text}"  # the same for every trial: say it once
            if line not in seen:
                seen.add(line)
                console.print(f"[yellow]warning:[/yellow] {line}", highlight=False)
    isolation = {s.name or "": s.sweep.isolation for s in plan}
    groups = df.groupby(["stage", "trainable"], sort=False) if "trainable" in df else []
    for (stage, _), g in groups:
        for text in group_caveats(g, isolation=isolation.get(stage)):
            where = f"stage {stage}: " if stage else ""
            console.print(f"[yellow]warning:[/yellow] {where}{text}", highlight=False)


MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_command() -> str:
    """How to start the `mlflow` of this Python from the user's shell: `mlflow` when the PATH finds
    this one, else the script beside the interpreter (`.venv/bin/mlflow` for a `make run` user),
    else `<python> -m mlflow`."""
    script = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    if found and script.is_file() and os.path.samefile(found, script):
        return "mlflow"
    if script.is_file():
        rel = os.path.relpath(script)
        return rel if not rel.startswith("..") else str(script)
    return f"{sys.executable} -m mlflow"


def runs_link(tracking_uri: str, sweep_name: str, ui: str = MLFLOW_UI) -> str | None:
    """The `mlflow ui` address of the sweep's runs view (`#/experiments/<id>/runs`), or None."""
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(tracking_uri).get_experiment_by_name(sweep_name)
    except Exception:  # the summary must print even when the store cannot be read
        return None
    if experiment is None:
        return None
    return f"{ui}/#/experiments/{experiment.experiment_id}/runs"
