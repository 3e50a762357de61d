"""The function Ray Tune runs for each trial, and the reporter that speaks Tune for a trainable.

`run_trial(config)` sets torch's threads to the CPUs Ray granted, looks the trainable up in
`trainables.registry` and runs it with a `TuneReporter`: epoch reports become `tune.report`
results (with a `tune.Checkpoint` when the trainable saved one), per-trial facts and table rows
ride inside them under `trainables.reporting`'s keys, and `tune.get_checkpoint` resumes a
restored trial.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from trainables.reporting import Tables, payload


class TuneReporter:
    def __init__(self) -> None:
        self._restored: tempfile.TemporaryDirectory[str] | None = None

    def report(
        self,
        metrics: dict[str, Any],
        *,
        facts: dict[str, Any] | None = None,
        tables: Tables | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(payload(metrics, facts=facts, tables=tables), checkpoint=checkpoint)

    def report_final(self, facts: dict[str, Any], *, tables: Tables | None = None) -> None:
        tune.report(payload({}, facts=facts, tables=tables, final=True))

    def resume_checkpoint(self) -> str | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        # Copied locally: the checkpoint may live on another node's or a remote storage.
        self._restored = tempfile.TemporaryDirectory(prefix="lvm-restore-")
        return str(Path(checkpoint.to_directory(self._restored.name)))


def run_trial(config: dict[str, Any]) -> None:
    """The function trainable Ray runs in each worker."""
    import ray
    import torch

    from trainables.registry import trainable

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        # One thread per granted core: trials sharing a node must not oversubscribe it.
        torch.set_num_threads(max(1, int(cpus)))
    trainable(config["trainable"])(config, TuneReporter())
