"""The table printed when a sweep ends: one line per trial with its key metrics, and where to look next."""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from orchestrator.driver.schema import SweepConfig
from orchestrator.driver.sweep_runner import SweepOutcome
from orchestrator.sinks.mlflow_runs import default_tracking_uri

# (column, header, format)
METRIC_COLUMNS = (
    ("best/val/acc", "best val/acc", "{:.3f}"),
    ("best/val/f1_macro", "best F1", "{:.3f}"),
    ("time/epoch_s", "epoch s", "{:.1f}"),
    ("time/samples_per_s", "samples/s", "{:.0f}"),
    ("params/total", "params M", "{:.2f}", 1e-6),
    ("flops/fwd_gmacs", "GMACs", "{:.3f}"),
)


def _fmt(value: Any, fmt: str, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int | float):
        return fmt.format(value * scale)
    return str(value)


def trials_frame(output: Path, sweep_name: str, trial_ids: list[str]) -> pd.DataFrame:
    path = output / "trials"
    if not path.is_dir():
        return pd.DataFrame()
    df = pd.read_parquet(path)
    return df[(df["sweep"] == sweep_name) & df["trial_id"].isin(trial_ids)]


def print_summary(
    sweep: SweepConfig,
    output: Path,
    outcome: SweepOutcome,
    *,
    tracking_uri: str | None = None,
    console: Console | None = None,
) -> None:
    # Wide enough for the table even when stdout is a pipe (CI logs, `| tee`).
    console = console or Console(width=max(Console().width, 140))
    df = trials_frame(output, sweep.name, outcome.trial_ids)
    searched = [k if k in df.columns else f"{k}.name" for k in sweep.search] or ["model.name"]
    table = Table(
        title=f"sweep {sweep.name}: {len(df)} trial(s)" + (" [smoke]" if sweep.smoke else "")
    )
    for header in ["trial", *searched, "status", "epochs"]:
        table.add_column(header)
    present = [c for c in METRIC_COLUMNS if c[0] in df.columns]
    for spec in present:
        table.add_column(spec[1], justify="right")
    for _, row in df.sort_values("trial_id").iterrows():
        cells = [str(row["trial_id"]), *(str(row.get(k)) for k in searched)]
        cells += [str(row["status"]), _fmt(row.get("epochs_completed"), "{:.0f}")]
        cells += [_fmt(row.get(c[0]), c[2], *c[3:]) for c in present]
        table.add_row(*cells)
    console.print(table)
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
