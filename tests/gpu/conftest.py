"""GPU tests: each takes the device's exclusive window in its own lock folder, and starts as a
fresh trial process would (Accelerate's precision is per process)."""

from __future__ import annotations

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
