"""Shared fixtures: a private MLflow store per test, Ray shut down once at the end."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

# Tests size their work for 2 cores; never let torch grab more threads than the machine has.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


@pytest.fixture(scope="session", autouse=True)
def _ray_shutdown() -> Iterator[None]:
    yield
    # Only a session that started Ray has it to shut down; the GPU machine has no Ray at all.
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


INTEGRATION_TIMEOUT_S = 900  # whole sweeps on Ray, on 2 cores


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if (
            "integration" in Path(str(item.fspath)).parts
            and item.get_closest_marker("timeout") is None
        ):
            item.add_marker(pytest.mark.timeout(INTEGRATION_TIMEOUT_S))
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
