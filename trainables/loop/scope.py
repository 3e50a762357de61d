"""What wraps every trial, whoever runs it: a clean start, and one trial-end report.

`scoped(run)` wraps a trainable's `run(config, reporter)`; `trainables.registry.trainable(name)`
returns trainables wrapped so, and every runner (Ray's workers, `python -m orchestrator trial`)
starts them through it. Workers are reused between trials (`isolation: reuse`), so before each trial it frees
what the last one left: Python garbage, the CUDA cache, compiled graphs, the peak-memory counters;
the trial then seeds its own RNGs (`TrialSetup.begin`) and the runner sets its threads.

The reporter's clock starts after the clean start; after the trainable returns, the reporter
sends its one trial-end report (`trainables.loop.reporting.Reporter.finish`: the trial-end facts
the trainable held back, `time/total_s`, `time/train_total_s`), with the trial's energy
(`energy/trial_j`, `energy/source`, `energy/reason`: `profilers.energy`) and its provenance
(`env/git_sha`, `env/git_dirty`, `env/git_diff_sha256`, `env/packages_sha256` and the `packages`
table: `profilers.provenance`).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

from profilers.energy import EnergyMeter, meter_for, trial_energy
from profilers.metric_registry import INT, declare
from profilers.provenance import package_rows, provenance_facts
from trainables.loop.reporting import Reporter

declare(
    __name__,
    {
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
    """`run` after a clean start, ending with the reporter's one trial-end report."""

    @wraps(run)
    def run_scoped(config: dict[str, Any], reporter: Reporter) -> None:
        global _process_trials
        _process_trials += 1
        fresh_start()
        reporter.begin()
        # A per-trial fact, with the first report: also there when a scheduler stops it early.
        reporter.add({"env/process_trials": _process_trials})
        energy = _trial_meter(str(config.get("device") or "auto"))
        energy_started = energy.reading()
        try:
            run(config, reporter)
            _report_record(reporter, energy, energy_started)
        except Exception:
            # What a failing trial recorded first (an OOM's batch size and memory: trainables.loop.fit)
            # still reaches its row. Not in a multi-worker trial: a report from one worker alone
            # would wait for the others forever.
            if reporter.holds_trial_end_facts() and not _multi_process():
                reporter.finish()
            raise
        reporter.finish()

    return run_scoped


def _report_record(reporter: Reporter, energy: EnergyMeter, started: Any) -> None:
    """The trial's energy (`profilers.energy`) and provenance (`profilers.provenance`: the commit,
    the uncommitted diff's hash, the package set and its `packages` table), trial-end facts."""
    reporter.report_final(
        {**trial_energy(energy, started), **provenance_facts()},
        tables={"packages": package_rows()},
    )


def _trial_meter(device: str) -> EnergyMeter:
    """The energy meter of the device the trial trains on (never fatal); `auto` as
    `trainables.loop.device.resolve_device` reads it."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch.backends.mps.is_available():
            device = "mps"
    return meter_for(torch.device(device))


def _multi_process() -> bool:
    torch = sys.modules.get("torch")
    if torch is None or not torch.distributed.is_available():
        return False
    return torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
