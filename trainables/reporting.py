"""The Ray Tune side of a trial: `tune.report` with a `tune.Checkpoint`, `tune.get_checkpoint` to resume."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from ray import tune

# Extra table rows (latency, sensitivity, ...) ride in the result under this key; the driver's
# Parquet sink pops them out before the metrics are logged.
TABLES_KEY = "_tables"


class TuneReporter:
    def __init__(self) -> None:
        self._restored: tempfile.TemporaryDirectory[str] | None = None

    def report(
        self,
        metrics: dict[str, Any],
        *,
        tables: dict[str, list[dict[str, Any]]] | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        payload = dict(metrics)
        if tables:
            payload[TABLES_KEY] = tables
        checkpoint = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(payload, checkpoint=checkpoint)

    def resume_checkpoint(self) -> str | None:
        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        # Copied locally: the checkpoint may live on another node's or a remote storage.
        self._restored = tempfile.TemporaryDirectory(prefix="lvm-restore-")
        return str(Path(checkpoint.to_directory(self._restored.name)))
