"""The device lock between processes: a measurement waits for steps in flight, steps wait for it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from profilers.device_lock import DeviceLock, device_key
from profilers.step_timer import StepTimer

CPU = torch.device("cpu")

CHILD = """
import sys, time
from profilers.device_lock import DeviceLock
lock = DeviceLock("cpu")
mode, seconds = sys.argv[1], float(sys.argv[2])
t0 = time.perf_counter()
if mode == "shared":
    lock.acquire_shared()
    print("held", flush=True)
    time.sleep(seconds)
    lock.release_shared()
else:
    print("waiting" if lock.writer_waiting() else "free", flush=True)
    lock.acquire_shared()
    print(f"{time.perf_counter() - t0:.3f}", flush=True)
    lock.release_shared()
"""


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path))


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=subprocess.PIPE, text=True)


def test_measurement_waits_for_a_step_in_another_process() -> None:
    proc = child("shared", "1.0")
    assert proc.stdout.readline().strip() == "held"
    with DeviceLock("cpu").exclusive() as window:
        assert window.exclusive
        assert window.wait_s > 0.5
    proc.wait(10)


def test_steps_wait_for_a_measurement_and_see_it_waiting() -> None:
    lock = DeviceLock("cpu")
    with lock.exclusive():
        proc = child("probe", "0")
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.8)
    assert float(proc.stdout.readline()) > 0.5
    proc.wait(10)
    assert not lock.writer_waiting()


def test_unwritable_lock_dir_is_recorded_not_fatal(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    lock = DeviceLock("cpu", directory=blocker / "sub")
    assert not lock.available and "unavailable" in lock.error
    with lock.exclusive() as window:
        assert window.exclusive is False and window.reason == lock.error
    timer = StepTimer(torch.device("cpu"), lock=lock)
    assert timer.lock is None


def test_key_names_the_physical_device() -> None:
    assert device_key("cpu").startswith("cpu-")


def test_a_hung_holder_times_out_into_a_non_exclusive_window(tmp_path) -> None:
    # flock conflicts between two open files even within one process: two objects act as two trials
    trial = StepTimer(CPU, lock=DeviceLock("cpu", directory=tmp_path))
    measurer = DeviceLock("cpu", directory=tmp_path)
    trial.start_epoch()
    trial.batch_ready()  # a step that never finishes (an exception inside it)
    with measurer.exclusive(timeout_s=0.2) as window:
        assert window.exclusive is False and "waited" in window.reason
        assert window.wait_s >= 0.2
    trial.start_epoch()  # the next epoch (or the timer's end) lets go of the stale hold
    with measurer.exclusive(timeout_s=0.2) as window:
        assert window.exclusive is True
