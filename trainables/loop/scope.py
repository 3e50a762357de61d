"""What wraps every trial, whoever runs it: a clean start, and one trial-end report with its times.

`scoped(run)` wraps a trainable's `run(config, reporter)`; `trainables.registry.trainable(name)`
returns trainables wrapped so, and every runner (Ray's workers, `python -m orchestrator trial`)
starts them through it. Workers are reused between trials (`isolation: reuse`), so before each trial it frees
what the last one left: Python garbage, the CUDA cache, compiled graphs, the peak-memory counters;
the trial then seeds its own RNGs (`TrialSetup.begin`) and the runner sets its threads.

After the trainable returns, one trial-end report (`Reporter.report_final`) carries the trial-end
facts the trainable sent (LoRA's merged profile, prune_recover's recovered scores: held back and
merged here, so there is exactly one) and:

| key                  | unit | meaning                                                        |
|----------------------|------|----------------------------------------------------------------|
| `time/total_s`       | s    | wall time of the trial in this process, start to end           |
| `time/train_total_s` | s    | sum of its training epochs' `time/epoch_s` (null with the time profiler off) |

and the trial's energy (`energy/trial_j`, `energy/source`, `energy/reason`: `profilers.energy`)
and its provenance (`env/git_sha`, `env/git_dirty`, `env/git_diff_sha256`, `env/packages_sha256`
and the `packages` table: `profilers.provenance`).

A trial restored by Ray counts from its restart: both cover the epochs run by that process.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from profilers.energy import EnergyMeter, meter_for, trial_energy
from profilers.metric_registry import INT, F, declare
from profilers.provenance import package_rows, provenance_facts
from trainables.loop.reporting import Reporter, Tables

declare(
    __name__,
    {
        "time/total_s": (F, "s", "wall time of the trial, start to end (per trial)"),
        "time/train_total_s": (F, "s", "sum of the trial's training epochs' time/epoch_s"),
        "env/process_trials": (
            INT,
            "count",
            "trials this worker process has run, this one included (> 1: a reused worker, whose "
            "CPU RSS carries what earlier trials left)",
        ),
    },
)

# Trials started in this process: a reused worker (`isolation: reuse`) runs several.
_process_trials = 0


class TrialClock:
    """A Reporter around the runner's: passes epoch reports on, sums their epoch times, and holds
    the trainable's trial-end facts until `finish` sends the one trial-end report."""

    def __init__(self, reporter: Reporter, device: str = "auto") -> None:
        self.reporter = reporter
        self.started = time.perf_counter()
        self.energy = _trial_meter(device)
        self.energy_started = self.energy.reading()
        self.train_s: float | None = None
        self.final: dict[str, Any] = {}
        self.final_tables: Tables = {}

    def report(
        self,
        metrics: dict[str, Any],
        *,
        facts: dict[str, Any] | None = None,
        tables: Tables | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        epoch_s = metrics.get("time/epoch_s")
        if isinstance(epoch_s, int | float):
            self.train_s = (self.train_s or 0.0) + float(epoch_s)
        self.reporter.report(metrics, facts=facts, tables=tables, checkpoint_dir=checkpoint_dir)

    def report_final(self, facts: dict[str, Any], *, tables: Tables | None = None) -> None:
        self.final.update(facts)
        for name, rows in (tables or {}).items():
            self.final_tables.setdefault(name, []).extend(rows)

    def resume_checkpoint(self) -> str | None:
        return self.reporter.resume_checkpoint()

    def finish(self) -> None:
        facts = {
            **self.final,
            "time/total_s": time.perf_counter() - self.started,
            "time/train_total_s": self.train_s,
            "env/process_trials": _process_trials,
            **trial_energy(self.energy, self.energy_started),
            **provenance_facts(),
        }
        tables = {**self.final_tables, "packages": package_rows()}
        self.reporter.report_final(facts, tables=tables)


def _trial_meter(device: str) -> EnergyMeter:
    """The energy meter of the device the trial will train on (a trial-end fact, never fatal);
    `auto` as `trainables.loop.device.resolve_device` reads it."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch.backends.mps.is_available():
            device = "mps"
    return meter_for(torch.device(device))


def fresh_start() -> None:
    """Free what an earlier trial in this process left, so this one starts as in a new process."""
    gc.collect()
    if "accelerate.state" in sys.modules:
        from accelerate.state import AcceleratorState, GradientState

        # Accelerate keeps one mixed precision and accumulation setting per process and refuses
        # a different one later: the next trial may ask for another. (Its own tests reset it so.)
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    if "torch._dynamo" in sys.modules:
        # Compiled graphs and guards of the last trial's model: memory, and recompile limits.
        torch._dynamo.reset()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        for index in range(torch.cuda.device_count()):
            torch.cuda.reset_peak_memory_stats(index)
    _return_freed_heap()
    from profilers.memory import reset_process_peak

    reset_process_peak()


def _return_freed_heap() -> None:
    """Give the heap the last trial freed back to the OS (glibc keeps it otherwise), so this
    trial's CPU RSS starts near a fresh process's instead of above the last trial's peak."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):  # musl and others have no malloc_trim: nothing to give back
        return


Trainable = Callable[[dict[str, Any], Reporter], None]


def scoped(run: Trainable) -> Trainable:
    """`run` after a clean start, ending with one trial-end report (`TrialClock`)."""

    @wraps(run)
    def run_scoped(config: dict[str, Any], reporter: Reporter) -> None:
        global _process_trials
        _process_trials += 1
        fresh_start()
        clock = TrialClock(reporter, str(config.get("device") or "auto"))
        try:
            run(config, clock)
        except Exception:
            # What a failing trial recorded first (an OOM's batch size and memory: trainables.loop.fit)
            # still reaches its row. Not in a multi-worker trial: a report from one worker alone
            # would wait for the others forever.
            if clock.final and not _multi_process():
                clock.finish()
            raise
        clock.finish()

    return run_scoped


def _multi_process() -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available():
        return False
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
