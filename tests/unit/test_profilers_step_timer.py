"""StepTimer: epoch figures that add up, MFU from given FLOPs and peak, lock waits kept apart."""

from __future__ import annotations

import time

import pytest
import torch

from profilers.device_lock import DeviceLock
from profilers.step_timer import KEYS, StepTimer

CPU = torch.device("cpu")


def run_epoch(
    timer: StepTimer, steps: int = 4, step_s: float = 0.01, data_s: float = 0.005
) -> dict:
    timer.start_epoch()
    for _ in range(steps):
        time.sleep(data_s)
        timer.batch_ready()
        time.sleep(step_s)
        timer.step_done(8)
    return timer.end_epoch()


def test_epoch_figures_add_up() -> None:
    m = run_epoch(StepTimer(CPU))
    assert set(KEYS) <= set(m)
    assert m["time/samples_per_s"] == pytest.approx(
        32 / (m["time/epoch_s"] - m["time/lock_wait_s"])
    )
    assert m["time/step_ms_p50"] >= 10 and m["time/step_ms_p90"] >= m["time/step_ms_p50"]
    assert m["time/data_s"] >= 4 * 0.005
    assert m["time/compute_s"] == pytest.approx(m["time/epoch_s"] - m["time/data_s"])
    assert m["time/mfu"] is None and "FLOPs" in m["time/mfu_reason"]


def test_mfu_from_flops_and_peak() -> None:
    m = run_epoch(StepTimer(CPU, flops_per_sample=1e9, peak_flops=1e12))
    achieved = 1e9 * m["time/samples_per_s"]
    assert m["time/achieved_tflops"] == pytest.approx(achieved / 1e12)
    assert m["time/mfu"] == pytest.approx(achieved / 1e12)
    assert "time/mfu_reason" not in m
    m = run_epoch(StepTimer(CPU, flops_per_sample=1e9, mfu_reason="peak of cpu unknown"))
    assert m["time/mfu"] is None and m["time/mfu_reason"] == "peak of cpu unknown"
    assert m["time/achieved_tflops"] > 0


def test_steps_take_the_lock_and_count_no_wait_when_free(tmp_path) -> None:
    lock = DeviceLock(CPU, directory=tmp_path)
    m = run_epoch(StepTimer(CPU, lock=lock))
    assert 0 <= m["time/lock_wait_s"] < 0.05
    busy = m["time/epoch_s"] - m["time/lock_wait_s"]
    assert m["time/samples_per_s"] == pytest.approx(32 / busy)
    assert m["time/compute_s"] == pytest.approx(
        m["time/epoch_s"] - m["time/data_s"] - m["time/lock_wait_s"]
    )
