"""GPU tests: each takes the device's exclusive window in its own lock folder, and starts as a
fresh trial process would (Accelerate's precision is per process)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainables.loop.scope import fresh_start


@pytest.fixture(autouse=True)
def _own_lock_and_fresh_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path / "locks"))
    fresh_start()
    yield
    fresh_start()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With LVM_GPU_TEST_LOG set (scripts/gpu_check.sh), one JSON line per test as it ends: a run
    cut at its time limit still tells which tests passed."""
    path = os.environ.get("LVM_GPU_TEST_LOG")
    if not path or not (report.when == "call" or report.outcome != "passed"):
        return
    outcome = report.outcome
    reason = ""
    if report.skipped and isinstance(report.longrepr, tuple):
        reason = str(report.longrepr[2])
    elif report.failed:
        reason = str(report.longrepr)[-600:]
    line = {
        "test": report.nodeid.split("/")[-1],
        "when": report.when,
        "outcome": outcome,
        "s": round(report.duration, 2),
        "reason": reason,
    }
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
