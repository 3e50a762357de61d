"""How a trial tells the world what it measured: the `Reporter` protocol and its in-memory form.

Three kinds of report, so that each figure is sent once and lands in the right place:
- an **epoch report** (`report`): the epoch's metrics (`epoch`, `train/*`, `val/*`, `time/*`,
  `mem/*`), one per epoch, optionally with a checkpoint; they become `epochs` rows and MLflow
  metrics with step = epoch;
- **facts known before training** (params, FLOPs, latency, environment, starting weights) ride
  once, with the first epoch report (`facts=`), together with the rows of extra tables
  (`tables=`); they land in the `trials` row and once in MLflow;
- a **trial-end report** (`report_final`): facts measured after training (`merged/...`,
  `recovered/...`, more table rows) without a new epoch; it also lands in `trials` and MLflow.

Under Ray the reporter is `orchestrator.workers.trial_runner.TuneReporter`; tests and notebooks use
`ListReporter`. The wire format (what the driver's sinks read) is `payload`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

Tables = dict[str, list[dict[str, Any]]]

# Keys of a result dict besides the epoch's metrics; the sinks pop them out.
TABLES_KEY = "_tables"
FACTS_KEY = "_facts"
FINAL_KEY = "_final"


class Reporter(Protocol):
    def report(
        self,
        metrics: dict[str, Any],
        *,
        facts: dict[str, Any] | None = None,
        tables: Tables | None = None,
        checkpoint_dir: str | None = None,
    ) -> None: ...

    def report_final(self, facts: dict[str, Any], *, tables: Tables | None = None) -> None: ...

    def resume_checkpoint(self) -> str | None: ...


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


class PendingFacts:
    """Facts a runner adds to whatever report a trial sends first (where it ran, how wide)."""

    def __init__(self, facts: dict[str, Any] | None) -> None:
        self._pending = facts

    def merge(self, facts: dict[str, Any] | None) -> dict[str, Any] | None:
        """`facts` with the pending ones added, the first time only."""
        own, self._pending = self._pending, None
        return {**own, **(facts or {})} if own else facts


@dataclass
class ListReporter:
    """Keeps every report in memory: runs a trainable without Ray (tests, notebooks)."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    finals: int = 0
    tables: Tables = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    resume_from: str | None = None
    keep_dir: Path | None = None

    def report(
        self,
        metrics: dict[str, Any],
        *,
        facts: dict[str, Any] | None = None,
        tables: Tables | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.reports.append(dict(metrics))
        self.facts.update(facts or {})
        self._add_tables(tables)
        if checkpoint_dir is not None and self.keep_dir is not None:
            dest = self.keep_dir / f"checkpoint_{len(self.reports):04d}"
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(str(dest))

    def report_final(self, facts: dict[str, Any], *, tables: Tables | None = None) -> None:
        self.final.update(facts)
        self.finals += 1
        self._add_tables(tables)

    def resume_checkpoint(self) -> str | None:
        return self.resume_from

    def trial_row(self) -> dict[str, Any]:
        """What the `trials` table holds for this trial: facts, the last epoch, trial-end facts."""
        last = self.reports[-1] if self.reports else {}
        return {**self.facts, **last, **self.final}

    def _add_tables(self, tables: Tables | None) -> None:
        for name, rows in (tables or {}).items():
            self.tables.setdefault(name, []).extend(rows)
