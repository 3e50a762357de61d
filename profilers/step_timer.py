"""Per-epoch time: wall time, throughput, step-time percentiles, data wait vs compute.

Keys (all per training epoch):

| key                   | unit      | meaning                                                        |
|-----------------------|-----------|----------------------------------------------------------------|
| `time/epoch_s`        | s         | wall time of the epoch, device synchronized at both ends       |
| `time/samples_per_s`  | samples/s | training samples (every worker's) / (`time/epoch_s` - `time/lock_wait_s`) |
| `time/step_ms_p50`    | ms        | median time from batch ready to step done                      |
| `time/step_ms_p90`    | ms        | 90th percentile of the same                                    |
| `time/data_s`         | s         | time spent waiting for the loader (batch requested -> ready)   |
| `time/compute_s`      | s         | `time/epoch_s - time/data_s - time/lock_wait_s`                |
| `time/lock_wait_s`    | s         | time spent waiting for the device lock (another trial was measuring latency) |
| `time/achieved_tflops`| TFLOP/s   | `flops_per_sample * time/samples_per_s` (None without FLOPs)   |
| `time/mfu`            | ratio     | model FLOPs utilization: `time/achieved_tflops / peak` (None + `time/mfu_reason` when the peak or the FLOPs are unknown) |
| `time/peak_tflops`    | TFLOP/s   | per trial: the peak MFU divides by                             |
| `time/peak_source`    | str       | per trial: `configured`, `table` (data sheet) or `measured` (a dense-matmul probe in the trial's precision and threads: every CPU, unlisted GPUs) |

On CUDA, step times come from CUDA events recorded on the stream (no per-step synchronize, which
would stall the pipeline); they are read once, at the end of the epoch. On CPU the host clock is
exact because CPU kernels run synchronously.

Pauses while another trial measures latency on the device (`time/lock_wait_s`) are an artifact of
sharing the device, not a property of the model: throughput and MFU leave them out, `time/epoch_s`
keeps them (it is the wall time the epoch took).

MFU uses the counted training-step FLOPs per sample (forward + backward, `flops/train_step_gflops`)
over the epoch's wall time, data waits included (the usual definition: useful model FLOPs per
second of training over the device's dense peak at the trial's precision). The optimizer step and
element-wise ops are not in the numerator, so MFU is a floor.

With a `lock` (a `profilers.device_lock.DeviceLock`) each step holds the device shared, so a
latency measurement of another trial on the same device never overlaps a step of this one. When a
measurement is waiting, the step synchronizes the device before letting go, so its queued kernels
are finished too; otherwise no step ever synchronizes.
"""

from __future__ import annotations

import statistics
import time

import torch

from profilers.device_lock import DeviceLock
from profilers.metric_registry import F, S, declare

declare(
    __name__,
    {
        "time/epoch_s": (
            F,
            "s",
            "wall time of the training epoch, device synchronized at both ends",
        ),
        "time/samples_per_s": (F, "samples/s", "training samples / (epoch_s - lock_wait_s)"),
        "time/step_ms_p50": (F, "ms", "median step time: batch in hand -> optimizer step done"),
        "time/step_ms_p90": (F, "ms", "90th percentile step time"),
        "time/data_s": (F, "s", "time waiting for the loader"),
        "time/compute_s": (F, "s", "epoch_s - data_s - lock_wait_s"),
        "time/lock_wait_s": (
            F,
            "s",
            "time paused while another trial measured latency on the device",
        ),
        "time/achieved_tflops": (F, "TFLOP/s", "flops/train_step_gflops x samples_per_s"),
        "time/mfu": (F, "ratio", "achieved / peak TFLOP/s at the trial's precision"),
        "time/mfu_reason": (S, "", "why time/mfu is null"),
        "time/peak_tflops": (F, "TFLOP/s", "the peak MFU divides by (per trial)"),
        "time/peak_source": (
            S,
            "",
            "where the peak comes from: configured, table (data sheet) or measured (matmul probe)",
        ),
    },
)


KEYS = (
    "time/epoch_s",
    "time/samples_per_s",
    "time/step_ms_p50",
    "time/step_ms_p90",
    "time/data_s",
    "time/compute_s",
    "time/lock_wait_s",
    "time/achieved_tflops",
    "time/mfu",
)


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` before a clock is read."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list (numpy's)."""
    import numpy as np

    return float(np.percentile(values, q))


class StepTimer:
    """Times one training epoch step by step; only observes, never changes the loop.

    Use: `start_epoch()`; per step `batch_ready()` once the batch is in hand, `step_done(n)` after
    the optimizer step; `end_epoch()` returns the flat metrics above.
    """

    def __init__(
        self,
        device: torch.device,
        *,
        flops_per_sample: float | None = None,
        peak_flops: float | None = None,
        mfu_reason: str | None = None,
        lock: DeviceLock | None = None,
        peak_source: str | None = None,
    ) -> None:
        """`flops_per_sample`: training-step FLOPs of one sample; `peak_flops`: device FLOP/s at the
        trial's precision, from `peak_source` (configured, table, measured); `mfu_reason`: why
        either is missing (reported with a null MFU)."""
        self.device = device
        self._cuda = device.type == "cuda"
        self.flops_per_sample = flops_per_sample
        self.peak_flops = peak_flops
        self.mfu_reason = mfu_reason
        self.peak_source = peak_source if peak_flops is not None else None
        self.lock = lock if lock is not None and lock.available else None
        self._holding = False

    def facts(self) -> dict[str, float | str | None]:
        """The per-trial keys: the peak MFU divides by, and where it comes from."""
        return {
            "time/peak_tflops": self.peak_flops / 1e12 if self.peak_flops else None,
            "time/peak_source": self.peak_source,
        }

    def release(self) -> None:
        """Let go of the device if a step was left unfinished (an exception inside the step)."""
        if self._holding and self.lock is not None:
            self.lock.release_shared()
        self._holding = False

    def __del__(self) -> None:
        self.release()

    def start_epoch(self) -> None:
        self.release()
        synchronize(self.device)
        self._samples = 0
        self._data_s = 0.0
        self._lock_wait_s = 0.0
        self._step_s: list[float] = []
        self._events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
        self._t0 = time.perf_counter()
        self._t_request = self._t0

    def batch_ready(self) -> None:
        now = time.perf_counter()
        self._data_s += now - self._t_request
        if self.lock is not None:
            self.lock.acquire_shared()
            self._holding = True
            waited = time.perf_counter()
            self._lock_wait_s += waited - now
            now = waited
        self._t_step = now
        if self._cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()
            self._start_event = start

    def step_done(self, n_samples: int) -> None:
        self._samples += n_samples
        if self._cuda:
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self._events.append((self._start_event, end))
        else:
            self._step_s.append(time.perf_counter() - self._t_step)
        if self.lock is not None:
            if self._cuda and self.lock.writer_waiting():
                synchronize(self.device)
            self.lock.release_shared()
            self._holding = False
        self._t_request = time.perf_counter()

    def end_epoch(
        self, *, samples: int | None = None, workers: int = 1
    ) -> dict[str, float | str | None]:
        """The epoch's metrics. In a multi-worker trial pass `samples`, the epoch's training
        samples over all `workers`: throughput then counts every worker's samples, and MFU
        divides by the peak of all `workers` devices."""
        synchronize(self.device)
        epoch_s = time.perf_counter() - self._t0
        busy_s = epoch_s - self._lock_wait_s
        total = self._samples if samples is None else samples
        peak = self.peak_flops * workers if self.peak_flops else None
        steps_ms = (
            [s.elapsed_time(e) for s, e in self._events]
            if self._cuda
            else [s * 1000.0 for s in self._step_s]
        )
        achieved = (
            self.flops_per_sample * total / busy_s
            if self.flops_per_sample is not None and busy_s > 0
            else None
        )
        out: dict[str, float | str | None] = {
            "time/epoch_s": epoch_s,
            "time/samples_per_s": total / busy_s if busy_s > 0 else None,
            "time/step_ms_p50": statistics.median(steps_ms) if steps_ms else None,
            "time/step_ms_p90": percentile(steps_ms, 90) if steps_ms else None,
            "time/data_s": self._data_s,
            "time/compute_s": max(epoch_s - self._data_s - self._lock_wait_s, 0.0),
            "time/lock_wait_s": self._lock_wait_s,
            "time/achieved_tflops": achieved / 1e12 if achieved is not None else None,
            "time/mfu": achieved / peak if achieved is not None and peak else None,
        }
        if out["time/mfu"] is None:
            out["time/mfu_reason"] = self.mfu_reason or (
                "no training-step FLOPs per sample"
                if achieved is None
                else "device peak FLOP/s unknown"
            )
        return out
