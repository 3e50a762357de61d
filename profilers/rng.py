"""The profilers' own random numbers: a trial's random stream must not depend on what was profiled.

A profiler that draws random inputs (`torch.randn`) or runs a training step (dropout) from the
global generators shifts every later draw of the trial: its initialisation, dropout masks and
augmentations. Profilers also run a different number of times per trial (the peak-FLOPs probe
runs once per worker process, so the second trial of a reused worker skips it), which made
trials of one config and seed differ. `own_rng()` saves the global states (torch CPU and the
initialised CUDA devices, Python's `random`, NumPy's), seeds them for the profiler so its own
inputs repeat too, and restores them afterwards.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import torch

PROFILER_SEED = 0

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def own_rng(seed: int = PROFILER_SEED) -> Iterator[None]:
    """Within: the global generators seeded with `seed`; on exit, their states as they were."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        for d in devices:
            torch.cuda.default_generators[d].manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def with_own_rng(fn: F) -> F:
    """`fn` runs inside `own_rng()`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with own_rng():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
