"""An exclusive window on a device for timed measurements, when trials share that device.

Ray runs each trial in its own process; with fractional GPUs, or several CPU trials on one node, a
latency measurement would time another trial's kernels along with its own. `DeviceLock` is a
readers-writer lock on files (fcntl.flock), so it works between any processes of one node, Ray or not:

- a trial's training steps hold it *shared* (`StepTimer` takes it per step, `in_use()` around
  evaluation): many trials train side by side as before;
- a latency measurement holds it *exclusive* (`exclusive()`): it waits until the steps in flight
  on that device finish, and no new step starts until the measurement is done.

A second "turnstile" file keeps a waiting measurement from being starved by a stream of steps:
readers pass through the turnstile, the writer holds it while it waits.

The lock is keyed by what the device physically is: a GPU's UUID (Ray remaps CUDA_VISIBLE_DEVICES,
so `cuda:0` in two trials may be two GPUs, or one), or the host name for the CPU. Files live in
`$LVMBENCH_LOCK_DIR` (default: `<tmp>/lvmbench-locks`). Caveats: only lvmbench trials take part
(other programs on the device are not held off), DataLoader worker processes keep running, and
a node-local lock cannot see another node (a device belongs to one node, so that is enough).
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

LOCK_DIR_ENV = "LVMBENCH_LOCK_DIR"
DEFAULT_TIMEOUT_S = 600.0


def device_key(device: torch.device | str) -> str:
    """A name for the physical device, the same in every process of this node."""
    device = torch.device(device)
    host = socket.gethostname()
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        return f"cuda-{uuid}" if uuid is not None else f"cuda-{host}-{index}"
    return f"{device.type}-{host}"


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "lvmbench-locks")


class DeviceLock:
    """Readers-writer lock on one device; see the module docstring."""

    def __init__(self, device: torch.device | str, directory: Path | None = None) -> None:
        self.key = re.sub(r"[^A-Za-z0-9_.-]", "_", device_key(device))
        self.directory = directory or lock_dir()
        self._fds: dict[str, int] = {}
        self.error: str | None = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for part in ("turnstile", "device"):
                path = self.directory / f"{self.key}.{part}.lock"
                self._fds[part] = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            # No lock is a recorded fact (latency rows say exclusive=False), not a crash.
            self.error = f"device lock unavailable at {self.directory}: {exc}"
            self.close()

    @property
    def available(self) -> bool:
        return not self.error

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}

    def __del__(self) -> None:
        self.close()

    # Shared side: per training step, so a measurement waits at most one step per trial.
    def acquire_shared(self) -> None:
        if not self._fds:
            return
        fcntl.flock(self._fds["turnstile"], fcntl.LOCK_SH)
        fcntl.flock(self._fds["turnstile"], fcntl.LOCK_UN)
        fcntl.flock(self._fds["device"], fcntl.LOCK_SH)

    def writer_waiting(self) -> bool:
        """True while a measurement holds or waits at the turnstile."""
        if not self._fds:
            return False
        try:
            fcntl.flock(self._fds["turnstile"], fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fds["turnstile"], fcntl.LOCK_UN)
        return False

    def release_shared(self) -> None:
        if self._fds:
            fcntl.flock(self._fds["device"], fcntl.LOCK_UN)

    @contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold the device shared for a region (e.g. evaluation)."""
        self.acquire_shared()
        try:
            yield
        finally:
            self.release_shared()

    @contextmanager
    def exclusive(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[ExclusiveWindow]:
        """Hold the device alone; the window tells whether it really was and how long it waited.

        After `timeout_s` of waiting (a hung trial holding the device) the block runs anyway,
        with `exclusive=False` and the reason, rather than stall the sweep.
        """
        window = ExclusiveWindow(exclusive=False, wait_s=0.0, reason=self.error)
        if not self._fds:
            yield window
            return
        t0 = time.perf_counter()
        deadline = t0 + timeout_s
        held: list[str] = []
        try:
            for part in ("turnstile", "device"):
                if not _flock_until(self._fds[part], deadline):
                    break
                held.append(part)
            window.wait_s = time.perf_counter() - t0
            if len(held) == 2:
                window.exclusive = True
            else:
                window.reason = (
                    f"waited {window.wait_s:.0f} s for the device lock ({self.key}); "
                    "measured without it"
                )
            yield window
        finally:
            for part in reversed(held):
                fcntl.flock(self._fds[part], fcntl.LOCK_UN)


def _flock_until(fd: int, deadline: float) -> bool:
    """Take `fd` exclusively, polling until `deadline`; False when the deadline passed."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.perf_counter() >= deadline:
                return False
            time.sleep(0.005)


class ExclusiveWindow:
    __slots__ = ("exclusive", "reason", "wait_s")

    def __init__(self, *, exclusive: bool, wait_s: float, reason: str | None) -> None:
        self.exclusive = exclusive
        self.wait_s = wait_s
        self.reason = reason


_LOCKS: dict[str, DeviceLock] = {}


def lock_for(device: torch.device | str) -> DeviceLock:
    """One lock object per device and process (each holds two open files)."""
    key = f"{lock_dir()}::{device_key(device)}"
    if key not in _LOCKS:
        _LOCKS[key] = DeviceLock(device)
    return _LOCKS[key]
