"""What a trial's result dict holds, as the driver's sinks read it.

A trainable sends three kinds of report (`trainables.loop.reporting`): epoch reports, per-trial facts
riding once with the first of them, and one trial-end report. Ray Tune adds its own bookkeeping
keys to each. `split_result` separates them so every sink treats them alike, once per result:
Tune hands every callback the same result dict, and the second sink gets the first one's split.
`trial_params` is a trial's config validated and flattened once for every sink.

Ray is optional here: `python -m orchestrator trial` runs one trial in-process on machines
without it, feeding the same sinks. The sinks derive from `LoggerCallback`, Tune's callback class
when Ray is installed and a plain base class otherwise (the driver calls the same hooks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.loop.reporting import FACTS_KEY, FINAL_KEY, TABLES_KEY, Tables

try:
    from ray.tune.logger import LoggerCallback
    from ray.tune.result import AUTO_RESULT_KEYS
except (
    ImportError
):  # no Ray: results come from `orchestrator.driver.single_trial`, without Tune's keys
    AUTO_RESULT_KEYS = ()

    class LoggerCallback:  # type: ignore[no-redef]
        """The hooks the sinks implement, as `orchestrator.driver.single_trial` calls them."""

        def log_trial_start(self, trial: Any) -> None: ...

        def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None: ...

        def log_trial_end(self, trial: Any, failed: bool = False) -> None: ...


TUNE_KEYS = frozenset(AUTO_RESULT_KEYS) | {
    "done",
    "trial_id",
    "experiment_tag",
    "should_checkpoint",
    "time_total_s",
    # Added by ray.tune.integration.ray_train.TuneReportCallback (multi-worker trials).
    "checkpoint_path",
    TABLES_KEY,
    FACTS_KEY,
    FINAL_KEY,
}


@dataclass
class TrialResult:
    final: bool  # the trial-end report: no epoch
    epoch: int | None
    metrics: dict[str, Any]  # the epoch's metrics, `epoch` included (empty for a final report)
    facts: dict[str, Any] = field(default_factory=dict)
    tables: Tables = field(default_factory=dict)


# The last result split, and each trial's flattened params: shared by the sinks of this driver.
_last_split: tuple[dict[str, Any], TrialResult] | None = None
_params: dict[str, tuple[Any, dict[str, Any]]] = {}


def split_result(result: dict[str, Any]) -> TrialResult:
    """`result` split into epoch metrics, facts and tables (once: the sinks share it)."""
    global _last_split
    if _last_split is not None and _last_split[0] is result:
        return _last_split[1]
    got = _split(result)
    _last_split = (result, got)
    return got


def trial_params(trial: Any) -> dict[str, Any]:
    """`trial.config` as dotted-key param columns (`orchestrator.tables.flatten_params`), validated
    and flattened once per trial for every sink."""
    from orchestrator.tables import flatten_params

    got = _params.get(trial.trial_id)
    if got is None or got[0] is not trial.config:
        got = _params[trial.trial_id] = (trial.config, flatten_params(trial.config))
    return got[1]


def _split(result: dict[str, Any]) -> TrialResult:
    final = bool(result.get(FINAL_KEY))
    # A final report repeats the last epoch's metrics for Tune's own display: not new figures.
    metrics = {} if final else {k: v for k, v in result.items() if k not in TUNE_KEYS}
    epoch = None
    if not final:
        epoch = int(metrics.get("epoch", result.get("training_iteration", 0)))
        metrics["epoch"] = epoch
    return TrialResult(
        final=final,
        epoch=epoch,
        metrics=metrics,
        facts=dict(result.get(FACTS_KEY) or {}),
        tables=dict(result.get(TABLES_KEY) or {}),
    )


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


def start_columns(config: dict[str, Any]) -> dict[str, Any]:
    """`start/*` columns from a trial's `start:` (where a later stage's trial starts from)."""
    start = config.get("start") or {}
    return {
        "start/stage": start.get("stage"),
        "start/trial_id": start.get("trial_id"),
        "start/checkpoint": start.get("checkpoint"),
    }
