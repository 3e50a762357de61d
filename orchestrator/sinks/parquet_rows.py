"""Driver-side Tune callback that writes the Parquet tables as results arrive.

Tables under the output directory: `epochs` (one row per trial-epoch: params and the epoch's
metrics), `trials` (one row per trial: params, `start/*`, status, error, per-trial facts, the
last epoch's metrics, trial-end facts, best-of-trial figures), and any table a trainable sends
rows for (`latency`, `flops`, `sensitivity`, `weights`, ...). A restored trial's parts are rebuilt
from what is on disk plus the new results, keyed by epoch, so no row is lost or doubled.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from orchestrator.sinks.rerun import record_rerun
from orchestrator.sinks.results import LoggerCallback, error_text, split_result, start_columns
from orchestrator.tables import (
    PARAM_COLUMNS,
    SCHEMA_VERSION,
    PartitionedTable,
    flatten_params,
)

# Best-of-trial summaries: metric -> "max" or "min".
BEST_OF = {"val/acc": "max", "val/f1_macro": "max", "val/loss": "min", "train/acc": "max"}
# Columns of a trials row that are not facts a trial reported.
_ROW_KEYS = {
    "status",
    "error",
    "error_type",
    "epochs_completed",
    "started_at",
    "ended_at",
    "rerun",
    "config/yaml",
}
# The exception line of a traceback: `ValueError: ...`, `torch.OutOfMemoryError: ...`, or Ray's
# `ray.exceptions.RayTaskError(ValueError): ...` around the trial's own exception.
_EXCEPTION_LINE = re.compile(
    r"^\s*(?P<outer>[A-Za-z_][\w.]*)(?:\((?P<inner>[A-Za-z_][\w.]*)\))?(?::\s|:?$)"
)


def error_class(error: str | None) -> str | None:
    """The exception class a trial died of, from its error text (the innermost one Ray names)."""
    for line in reversed((error or "").splitlines()):
        m = _EXCEPTION_LINE.match(line)
        if m is None:
            continue
        name = m["inner"] or m["outer"]
        if m["inner"] or re.search(r"(Error|Exception|Interrupt|Exit)$", name):
            return name
    return None


def summarize_trial(
    base: dict[str, Any],
    epoch_rows: list[dict[str, Any]],
    status: str,
    error: str | None,
    facts: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One `trials` row: base columns, facts, the last epoch's metrics, best-of-trial figures."""
    row = dict(base)
    row["status"] = status
    row["error"] = error
    row["error_type"] = error_class(error)
    row["epochs_completed"] = sum(1 for r in epoch_rows if int(r.get("epoch") or 0) > 0)
    row.update(facts or {})
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


class ParquetSink(LoggerCallback):
    def __init__(self, output: Path, sweep_name: str) -> None:
        self.output = Path(output)
        self.sweep_name = sweep_name
        self._tables: dict[str, PartitionedTable] = {}
        self._epochs: dict[str, dict[int, dict[str, Any]]] = {}
        self._facts: dict[str, dict[str, Any]] = {}
        self._rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._started: dict[str, str] = {}
        self._params: dict[str, dict[str, Any]] = {}
        self._reruns: dict[str, dict[str, Any]] = {}

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
            previous = self.table("trials").read_part(self._part(trial))
            if previous:
                self._facts[trial.trial_id] = {
                    k: v for k, v in previous[0].items() if "/" in k and v is not None
                }
        return self._epochs[trial.trial_id]

    def log_trial_start(self, trial: Any) -> None:
        self._started.setdefault(trial.trial_id, _now())
        self._history(trial)
        self._write_trial(trial, "RUNNING", None)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        got = split_result(result)
        history = self._history(trial)
        self._facts.setdefault(trial.trial_id, {}).update(got.facts)
        if not got.final:
            assert got.epoch is not None
            history[got.epoch] = {**self._base(trial), **got.metrics}
            self.table("epochs").write_part(
                self._part(trial), [history[e] for e in sorted(history)]
            )
        else:
            self._facts[trial.trial_id].update(got.metrics)
        self._write_tables(trial, got.tables)
        self._write_trial(trial, "RUNNING", None)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if failed:
            self._write_trial(trial, "ERROR", error_text(trial))
        else:
            self._write_trial(trial, "TERMINATED", None)

    def _write_tables(self, trial: Any, tables: dict[str, list[dict[str, Any]]]) -> None:
        base = self._base(trial)
        for name, rows in tables.items():
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

    def _write_trial(self, trial: Any, status: str, error: str | None) -> None:
        history = self._history(trial)
        if trial.trial_id not in self._reruns:
            # Once per trial and driver: the resolved config and the command that reruns it.
            self._reruns[trial.trial_id] = record_rerun(
                self.output, self.sweep_name, trial.trial_id, trial.config
            )
        base = {
            **self._base(trial),
            **start_columns(trial.config),
            **self._reruns[trial.trial_id],
        }
        facts = {k: v for k, v in self._facts.get(trial.trial_id, {}).items() if k not in _ROW_KEYS}
        row = summarize_trial(base, [history[e] for e in sorted(history)], status, error, facts)
        row["started_at"] = self._started.get(trial.trial_id)
        row["ended_at"] = _now() if status in ("TERMINATED", "ERROR") else None
        self.table("trials").write_part(self._part(trial), [row])


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
