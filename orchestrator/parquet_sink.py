"""Driver-side Tune callback that writes the Parquet tables as results arrive.

Tables under the output directory: `epochs` (one row per trial-epoch), `trials` (one row per
trial: status, error, final and best metrics, static profiles, fingerprint), and any table a
trainable sends rows for (`latency`, `sensitivity`, `weights`, ...). A restored trial's part is
rebuilt from what is on disk plus the new results, keyed by epoch, so no row is lost or doubled.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from ray.tune import Callback
from ray.tune.result import AUTO_RESULT_KEYS

from orchestrator.parquet_tables import (
    PARAM_COLUMNS,
    SCHEMA_VERSION,
    PartitionedTable,
    flatten_params,
)
from trainables.reporting import TABLES_KEY

TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {
    "done",
    "trial_id",
    "experiment_tag",
    "should_checkpoint",
    "time_total_s",
    TABLES_KEY,
}
# Best-of-trial summaries: metric -> "max" or "min".
BEST_OF = {"val/acc": "max", "val/f1_macro": "max", "val/loss": "min", "train/acc": "max"}


def user_metrics(result: dict[str, Any]) -> dict[str, Any]:
    """What the trainable reported, without Tune's bookkeeping keys."""
    return {k: v for k, v in result.items() if k not in TUNE_KEYS}


def error_text(trial: Any) -> str:
    # The driver's local error file is written before callbacks run; get_error() reads the
    # (possibly remote) storage copy, which may not be synced yet.
    local = trial.error_file
    if local and Path(local).is_file():
        text = Path(local).read_text(encoding="utf-8", errors="replace").strip()
    else:
        text = str(trial.get_error() or "").strip()
    if not text:
        return f"unknown error (see {trial.path or 'the trial directory'})"
    # Tune wraps the worker's traceback; the last lines carry the exception itself.
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-5:])[-2000:]


def summarize_trial(
    base: dict[str, Any], epoch_rows: list[dict[str, Any]], status: str, error: str | None
) -> dict[str, Any]:
    row = dict(base)
    row["status"] = status
    row["error"] = error
    row["epochs_completed"] = len(epoch_rows)
    if epoch_rows:
        last = epoch_rows[-1]
        row.update({k: v for k, v in last.items() if "/" in k})
        for metric, mode in BEST_OF.items():
            scored = [r for r in epoch_rows if isinstance(r.get(metric), int | float)]
            if not scored:
                continue
            pick = max if mode == "max" else min
            best = pick(scored, key=lambda r, m=metric: r[m])
            row[f"best/{metric}"] = best[metric]
            if metric == "val/acc":
                row["best/epoch"] = best["epoch"]
    return row


class ParquetSink(Callback):
    def __init__(self, output: Path, sweep_name: str) -> None:
        self.output = Path(output)
        self.sweep_name = sweep_name
        self._tables: dict[str, PartitionedTable] = {}
        self._epochs: dict[str, dict[int, dict[str, Any]]] = {}
        self._rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._started: dict[str, str] = {}
        self._params: dict[str, dict[str, Any]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state; open tables are rebuilt on restore.
        return {"output": self.output, "sweep_name": self.sweep_name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["output"], state["sweep_name"])  # type: ignore[misc]

    def table(self, name: str) -> PartitionedTable:
        if name not in self._tables:
            fixed = PARAM_COLUMNS if name in ("epochs", "trials") else None
            self._tables[name] = PartitionedTable(self.output, name, fixed)
        return self._tables[name]

    def _part(self, trial: Any) -> str:
        return f"{self.sweep_name}__{trial.trial_id}"

    def _base(self, trial: Any) -> dict[str, Any]:
        # A trial's config never changes: validate and flatten it once, not on every result.
        if trial.trial_id not in self._params:
            self._params[trial.trial_id] = flatten_params(trial.config)
        return {
            "schema_version": SCHEMA_VERSION,
            "sweep": self.sweep_name,
            "trial_id": trial.trial_id,
            **self._params[trial.trial_id],
        }

    def _history(self, trial: Any) -> dict[int, dict[str, Any]]:
        if trial.trial_id not in self._epochs:
            # A resumed sweep: start from the rows already written for this trial.
            rows = self.table("epochs").read_part(self._part(trial))
            self._epochs[trial.trial_id] = {int(r["epoch"]): r for r in rows}
        return self._epochs[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._started.setdefault(trial.trial_id, _now())
        self._history(trial)
        self._write_trial(trial, "RUNNING", None)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        base = self._base(trial)
        metrics = user_metrics(result)
        epoch = int(metrics.get("epoch", result.get("training_iteration", 0)))
        metrics["epoch"] = epoch
        history = self._history(trial)
        history[epoch] = {**base, **metrics}
        self.table("epochs").write_part(self._part(trial), [history[e] for e in sorted(history)])
        for name, rows in (result.get(TABLES_KEY) or {}).items():
            key = (name, trial.trial_id)
            stored = self._rows.get(key)
            if stored is None:
                stored = self.table(name).read_part(self._part(trial))
            # A re-run static profile (a restored trial) replaces its rows instead of doubling them.
            phases = {r.get("phase") for r in rows}
            stored = [r for r in stored if r.get("phase") not in phases or not rows]
            stored += [{**base, **r} for r in rows]
            self._rows[key] = stored
            self.table(name).write_part(self._part(trial), stored)
        self._write_trial(trial, "RUNNING", None)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write_trial(trial, "TERMINATED", None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._write_trial(trial, "ERROR", error_text(trial))

    def _write_trial(self, trial: Any, status: str, error: str | None) -> None:
        history = self._history(trial)
        row = summarize_trial(
            self._base(trial), [history[e] for e in sorted(history)], status, error
        )
        row["started_at"] = self._started.get(trial.trial_id)
        row["ended_at"] = _now() if status in ("TERMINATED", "ERROR") else None
        self.table("trials").write_part(self._part(trial), [row])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
