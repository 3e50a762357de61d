"""How a trial tells the world what it measured: one `Reporter` base class, one wire format.

Three kinds of report, so that each figure is sent once and lands in the right place:
- an **epoch report** (`report`): the epoch's metrics (`epoch`, `train/*`, `val/*`, `time/*`,
  `mem/*`), one per epoch, optionally with a checkpoint; they become `epochs` rows and MLflow
  metrics with step = epoch;
- **per-trial facts** (params, FLOPs, latency, environment, starting weights, where it ran) and
  the rows of extra tables (`add`, or `facts=` / `tables=` of a report) are held and ride ONCE,
  with the next report of any kind; they land in the `trials` row and once in MLflow;
- the **trial-end report** (`finish`, sent once by `trainables.loop.scope.scoped`): the facts the
  trainable measured after training (`report_final`: `merged/...`, `recovered/...`, an OOM
  record, more table rows) with the trial's times, assembled in one place (`trial_end_facts`).

The trial's running times (`time/total_s`, `time/train_total_s`) also ride with every epoch
report: a trial that a scheduler stops early (ASHA) never sends its trial-end report, and its
`trials` row keeps the times up to its last epoch.

The base class owns all of that; a runner implements `emit(result, checkpoint_dir)` only:
`orchestrator.workers.trial_runner.TuneReporter` (Ray Tune), `...train_workers.TrainReporter`
(Ray Train workers), `orchestrator.driver.single_trial.SinkReporter` (in-process, into the
sinks), and `ListReporter` here (tests, notebooks). The wire format the driver's sinks read is
`payload`.

| key                  | unit | meaning                                                        |
|----------------------|------|----------------------------------------------------------------|
| `time/total_s`       | s    | wall time of the trial in this process, start to end           |
| `time/train_total_s` | s    | sum of its training epochs' `time/epoch_s` (null with the time profiler off) |

A trial restored by Ray counts from its restart: both cover the epochs run by that process.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from profilers.metric_registry import F, declare

Tables = dict[str, list[dict[str, Any]]]

# Keys of a result dict besides the epoch's metrics; the sinks pop them out.
TABLES_KEY = "_tables"
FACTS_KEY = "_facts"
FINAL_KEY = "_final"

declare(
    __name__,
    {
        "time/total_s": (F, "s", "wall time of the trial, start to end (per trial)"),
        "time/train_total_s": (F, "s", "sum of the trial's training epochs' time/epoch_s"),
    },
)


def payload(
    metrics: dict[str, Any],
    *,
    facts: dict[str, Any] | None = None,
    tables: Tables | None = None,
    final: bool = False,
) -> dict[str, Any]:
    """One result as the driver receives it: metrics flat, facts and tables under their keys."""
    out = dict(metrics)
    if facts:
        out[FACTS_KEY] = dict(facts)
    if tables:
        out[TABLES_KEY] = tables
    if final:
        out[FINAL_KEY] = True
    return out


def add_rows(into: Tables, tables: Tables | None) -> Tables:
    for name, rows in (tables or {}).items():
        into.setdefault(name, []).extend(rows)
    return into


class Reporter:
    """What a trainable reports through; a runner subclasses it and implements `emit`."""

    def __init__(self, facts: dict[str, Any] | None = None) -> None:
        self._facts: dict[str, Any] = dict(facts or {})  # not yet sent
        self._tables: Tables = {}
        self._final: dict[str, Any] = {}  # the trainable's trial-end facts, held for `finish`
        self._final_tables: Tables = {}
        self._last_metrics: dict[str, Any] = {}
        self._train_s: float | None = None
        self._started = time.perf_counter()
        self.finished = False

    # -- what a runner implements --------------------------------------------------------------
    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        """Send one result (`payload`'s format), with a checkpoint folder to keep, if any."""
        raise NotImplementedError

    def resume_checkpoint(self) -> str | None:
        """A local folder holding the checkpoint a restored trial resumes from, if any."""
        return None

    # -- what a trainable calls ----------------------------------------------------------------
    def add(self, facts: dict[str, Any] | None = None, tables: Tables | None = None) -> None:
        """Per-trial facts and table rows known now: they ride once, with the next report."""
        self._facts.update(facts or {})
        add_rows(self._tables, tables)

    def report(
        self,
        metrics: dict[str, Any],
        *,
        facts: dict[str, Any] | None = None,
        tables: Tables | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        """One epoch's metrics, with whatever facts and rows are still held."""
        self.add(facts, tables)
        epoch_s = metrics.get("time/epoch_s")
        if isinstance(epoch_s, int | float):
            self._train_s = (self._train_s or 0.0) + float(epoch_s)
        self._last_metrics = dict(metrics)
        held, rows = self._take()
        self.emit(payload(metrics, facts={**held, **self.times()}, tables=rows), checkpoint_dir)

    def report_final(self, facts: dict[str, Any], *, tables: Tables | None = None) -> None:
        """Facts measured after training: held until the one trial-end report (`finish`)."""
        self._final.update(facts)
        add_rows(self._final_tables, tables)

    # -- what the trial's scope calls ----------------------------------------------------------
    def begin(self) -> None:
        """The trial starts now (its clock)."""
        self._started = time.perf_counter()
        self._train_s = None

    def holds_trial_end_facts(self) -> bool:
        return bool(self._final)

    def finish(self) -> None:
        """The trial-end report, once: the last epoch's metrics again at the top level (for Tune's
        own display and a searcher reading the completed result; the sinks ignore them), the
        facts still held, the trial-end facts and the times."""
        if self.finished:
            return
        self.finished = True
        held, rows = self._take()
        add_rows(rows, self._final_tables)
        facts = self.trial_end_facts(held)
        self.emit(payload(self._last_metrics, facts=facts, tables=rows, final=True), None)

    def trial_end_facts(self, held: dict[str, Any]) -> dict[str, Any]:
        """The one place the trial-end report's facts are assembled."""
        return {**held, **self._final, **self.times()}

    def times(self) -> dict[str, Any]:
        return {
            "time/total_s": time.perf_counter() - self._started,
            "time/train_total_s": self._train_s,
        }

    def _take(self) -> tuple[dict[str, Any], Tables]:
        held, rows = self._facts, self._tables
        self._facts, self._tables = {}, {}
        return held, rows


class ListReporter(Reporter):
    """Keeps every report in memory: runs a trainable without Ray (tests, notebooks)."""

    def __init__(
        self,
        *,
        resume_from: str | None = None,
        keep_dir: Path | None = None,
        facts: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(facts)
        self.resume_from = resume_from
        self.keep_dir = keep_dir
        self.reports: list[dict[str, Any]] = []
        self.facts: dict[str, Any] = {}  # every fact received with an epoch report
        self.final: dict[str, Any] = {}  # the trial-end report's facts
        self.finals = 0
        self.tables: Tables = {}
        self.checkpoints: list[str] = []

    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        facts = result.get(FACTS_KEY) or {}
        add_rows(self.tables, result.get(TABLES_KEY))
        if result.get(FINAL_KEY):
            self.final.update(facts)
            self.finals += 1
            return
        self.reports.append({k: v for k, v in result.items() if k not in (FACTS_KEY, TABLES_KEY)})
        self.facts.update(facts)
        if checkpoint_dir is not None and self.keep_dir is not None:
            dest = self.keep_dir / f"checkpoint_{len(self.reports):04d}"
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(str(dest))

    def resume_checkpoint(self) -> str | None:
        return self.resume_from

    def trial_row(self) -> dict[str, Any]:
        """What the `trials` table holds for this trial once it ended: facts, the last epoch,
        trial-end facts. Sends the trial-end report if no scope did (a trainable's `run` called
        directly)."""
        self.finish()
        last = self.reports[-1] if self.reports else {}
        return {**self.facts, **last, **self.final}
