"""The function Ray Tune runs for a one-worker trial, and the reporter that speaks Tune for it.

`run_trial(config)` runs in the trial's own process (torch threads set to the CPUs Ray granted;
`orchestrator.workers.train_workers` picks it, or a multi-worker driver, for the Tuner). The trainable
from `trainables.registry` reports through the `TuneReporter`: epoch reports become
`tune.report` results (with a `tune.Checkpoint` when the trainable saved one), per-trial facts
and table rows ride inside them under `trainables.loop.reporting`'s keys, and `tune.get_checkpoint`
resumes a restored trial.

Every trial also records where it ran (`env/ray_node_id`, `env/node_ip`) and its number of
training processes (`dist/world_size`), once, with its first report.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from profilers.metric_registry import INT, S, declare
from trainables.loop.reporting import Reporter

declare(
    __name__,
    {
        "env/ray_node_id": (
            S,
            "",
            "Ray node the trial ran on (a multi-worker trial: the node of rank 0)",
        ),
        "env/node_ip": (S, "", "IP address of that node"),
        "dist/world_size": (INT, "count", "training processes of the trial (resources.workers)"),
    },
)


def where_it_runs(world_size: int = 1) -> dict[str, Any]:
    """The placement facts of the calling process's trial."""
    import ray

    return {
        "env/ray_node_id": ray.get_runtime_context().get_node_id(),
        "env/node_ip": ray.util.get_node_ip_address(),
        "dist/world_size": world_size,
    }


class TuneReporter(Reporter):
    """`trainables.loop.reporting.Reporter` speaking Ray Tune: one `tune.report` per result."""

    def __init__(self, facts: dict[str, Any] | None = None) -> None:
        super().__init__(facts)
        self._restored: tempfile.TemporaryDirectory[str] | None = None

    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(result, checkpoint=checkpoint)

    def resume_checkpoint(self) -> str | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        self._restored, path = local_copy(checkpoint)
        return path


def local_copy(checkpoint: Any) -> tuple[tempfile.TemporaryDirectory[str], str]:
    """A Ray checkpoint copied into a local temporary folder (kept alive by the caller): it may
    live on another node's disk or on remote storage."""
    folder = tempfile.TemporaryDirectory(prefix="lvm-restore-")
    return folder, str(Path(checkpoint.to_directory(folder.name)))


def run_trial(config: dict[str, Any]) -> None:
    """The function trainable Ray runs for a one-worker trial."""
    import ray
    import torch

    from trainables.registry import trainable

    global _default_threads
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if _default_threads is None:
        _default_threads = torch.get_num_threads()
    # One thread per granted core: trials sharing a node must not oversubscribe it. Set for
    # every trial: a reused worker (`isolation: reuse`) may come from a trial that changed it.
    torch.set_num_threads(max(1, int(cpus)) if cpus else _default_threads)
    trainable(config["trainable"])(config, TuneReporter(where_it_runs()))


# torch's thread count in this worker before the first trial changed it.
_default_threads: int | None = None
