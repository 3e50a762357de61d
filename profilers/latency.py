"""Forward latency and throughput per input size x batch size x precision: one `latency` row each.

How: the model in eval mode, under `torch.inference_mode()` and, for fp16/bf16, `torch.autocast`
(what evaluation runs under); random inputs made once, on the device, before any clock starts;
`warmup` untimed forwards, then up to `repeats` timed ones. On CUDA each forward is bracketed by
CUDA events on the stream and the device is synchronized once, after the last one; on CPU kernels
run synchronously and the host clock (`perf_counter`) is read around each forward. Repeats stop
early (at no fewer than 3) once a point has used `max_point_s` seconds, so a large model on a CPU
still finishes; the row says how many repeats it got. ViTs and Swins run other sizes through timm's
dynamic image size (`profilers.input_size`), so the weights measured are the trial's.

The timed forwards run as `torch.utils.benchmark` (through `timeit`) runs its own: Python's garbage
collector is collected once before and switched off during them, so a collection of a large
process's heap (a Ray worker holds Ray, Tune, Accelerate, pydantic, ...) cannot land inside one
forward. Each point records its own spread (`cv`) and, on the host clock, the share of its wall
time the timing thread was on a CPU (`cpu_share`, from the thread's CPU clock): a share well below
1 means the thread was waiting for a core (another process on the machine), not running slower.
A point whose `cv` is above `NOISY_CV` (0.10) is `noisy`: quote it with its spread, or measure again
on a quieter machine.

Columns of a row:

| column                     | unit      | meaning                                                     |
|----------------------------|-----------|-------------------------------------------------------------|
| `input_size`               | px        | side length of the square input                             |
| `batch_size`               | samples   | inputs per forward                                          |
| `precision`                | str       | fp32, fp16 or bf16 (autocast)                               |
| `latency_ms_p50`           | ms        | median time of one forward of the whole batch               |
| `latency_ms_p90`, `_p99`   | ms        | 90th / 99th percentile (linear interpolation; with 30 repeats p99 is close to the maximum) |
| `latency_ms_mean`, `_stdev`, `_min` | ms | mean, sample standard deviation, minimum                 |
| `cv`                       | ratio     | coefficient of variation of the timed forwards: stdev / mean |
| `noisy`                    | bool      | `cv` above `NOISY_CV` (0.10): the point is not to be quoted without its spread |
| `cpu_share`                | ratio     | host clock only: thread CPU time / wall time of the timed forwards (below ~0.9: the thread waited for a core) |
| `per_sample_ms_p50`        | ms        | `latency_ms_p50 / batch_size`; at batch 1 this is per-instance latency |
| `throughput_samples_per_s` | samples/s | `batch_size * repeats / sum of the timed forwards`          |
| `warmup`, `repeats`        | count     | untimed and timed forwards actually run                     |
| `timer`                    | str       | `cuda_events` or `perf_counter`                             |
| `exclusive`                | bool      | the device lock was held for the whole point (no other lvmbench trial stepped on this device meanwhile) |
| `lock_wait_s`              | s         | time spent waiting for that lock                            |
| `status`, `error`          | str       | `ok`, `oom` (an out-of-memory at this batch size is a data point) or `error`, with the message |

Flat keys for the trial summary (`latency_metrics`), at the trial's input size and precision:

| key                          | unit      | meaning                                             |
|------------------------------|-----------|-----------------------------------------------------|
| `latency/b1_ms_p50`          | ms        | per-instance latency (batch 1), median              |
| `latency/b1_ms_p99`          | ms        | per-instance latency (batch 1), 99th percentile     |
| `latency/b1_cv`              | ratio     | coefficient of variation of that batch-1 point      |
| `latency/b1_noisy`           | bool      | that point's `cv` is above `NOISY_CV`               |
| `latency/max_samples_per_s`  | samples/s | best throughput over the measured batch sizes       |
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from profilers.device_lock import lock_for
from profilers.metric_registry import INT, B, F, S, declare, declare_table
from profilers.step_timer import percentile, synchronize

declare(
    __name__,
    {
        "latency/b1_ms_p50": (F, "ms", "median forward latency at batch 1 (per-instance latency)"),
        "latency/b1_ms_p99": (F, "ms", "99th percentile forward latency at batch 1"),
        "latency/b1_cv": (
            F,
            "ratio",
            "coefficient of variation (stdev / mean) of the batch-1 timed forwards",
        ),
        "latency/b1_noisy": (
            B,
            "",
            "the batch-1 point's cv is above profilers.latency.NOISY_CV (0.10)",
        ),
        "latency/max_samples_per_s": (
            F,
            "samples/s",
            "best inference throughput over the batch sizes",
        ),
        "latency/exclusive": (
            B,
            "",
            "every latency point ran inside the device's exclusive window",
        ),
    },
)
declare_table(
    "latency",
    __name__,
    {
        "tag": (
            S,
            "",
            "'' for the model the trial reports on; dense, merged, ... for earlier states",
        ),
        "input_size": (INT, "px", "input side"),
        "batch_size": (INT, "samples", "batch size"),
        "precision": (S, "", "fp32, fp16 or bf16"),
        "status": (S, "", "ok, oom (out of memory at this batch: a data point) or error"),
        "latency_ms_p50": (F, "ms", "median latency of one forward of the batch"),
        "latency_ms_p90": (F, "ms", "90th percentile"),
        "latency_ms_p99": (F, "ms", "99th percentile"),
        "latency_ms_mean": (F, "ms", "mean"),
        "latency_ms_stdev": (F, "ms", "sample standard deviation"),
        "latency_ms_min": (F, "ms", "fastest forward"),
        "cv": (F, "ratio", "coefficient of variation of the timed forwards (stdev / mean)"),
        "noisy": (B, "", "cv above profilers.latency.NOISY_CV (0.10): quote with its spread"),
        "cpu_share": (
            F,
            "ratio",
            "host clock: thread CPU time / wall time of the timed forwards (null on CUDA)",
        ),
        "per_sample_ms_p50": (F, "ms", "p50 / batch size"),
        "throughput_samples_per_s": (F, "samples/s", "batch x repeats / timed seconds"),
        "warmup": (INT, "count", "untimed forwards run first"),
        "repeats": (INT, "count", "timed forwards run"),
        "timer": (S, "", "cuda_events or perf_counter"),
        "exclusive": (B, "", "the point ran inside the device's exclusive window"),
        "lock_wait_s": (F, "s", "time waited for the exclusive window"),
        "device": (S, "", "device the point ran on"),
        "channels_last": (B, "", "inputs and weights in channels_last"),
        "error": (S, "", "what failed"),
    },
)


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# A point whose timed forwards vary more than this (stdev / mean) is flagged `noisy`. A quiet CPU
# gives 0.01-0.05 at batch 1 (ResNet-50, ViT-B/16); a neighbour taking the core half the time
# gives 0.2 and more.
NOISY_CV = 0.10


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """torch.autocast for fp16/bf16 (what evaluation runs under), nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[precision])


@contextlib.contextmanager
def gc_paused() -> Any:
    """Collect once, then keep Python's collector off (as `timeit`, hence `torch.utils.benchmark`,
    does around its timed statements); restored after."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class ForwardTimes(list):
    """Milliseconds of each timed forward, plus `cpu_share` (host clock only, else None)."""

    cpu_share: float | None = None


def time_forward(
    model: nn.Module,
    x: torch.Tensor,
    *,
    precision: str = "fp32",
    warmup: int = 5,
    repeats: int = 30,
    max_point_s: float | None = 10.0,
) -> ForwardTimes:
    """Milliseconds of each timed forward of `model` on `x` (model already in eval mode)."""
    device = x.device
    cuda = device.type == "cuda"
    times_ms = ForwardTimes()
    with torch.inference_mode(), autocast_context(device, precision):
        for _ in range(warmup):
            model(x)
        synchronize(device)
        with gc_paused():
            _timed(model, x, device, cuda, repeats, max_point_s, times_ms)
    return times_ms


def _timed(
    model: nn.Module,
    x: torch.Tensor,
    device: torch.device,
    cuda: bool,
    repeats: int,
    max_point_s: float | None,
    times_ms: ForwardTimes,
) -> None:
    """The timed forwards into `times_ms` (gc already paused)."""
    cpu0 = time.thread_time()
    events: list[tuple[Any, Any]] = []
    t_start = time.perf_counter()
    for i in range(repeats):
        if cuda:
            start, end = (
                torch.cuda.Event(enable_timing=True),
                torch.cuda.Event(enable_timing=True),
            )
            start.record()
            model(x)
            end.record()
            events.append((start, end))
            # The budget is checked on the host clock: it runs ahead of the GPU by the queue,
            # which only matters for a budget, not for the times.
        else:
            t0 = time.perf_counter()
            model(x)
            times_ms.append((time.perf_counter() - t0) * 1000.0)
        if max_point_s is not None and i >= 2 and time.perf_counter() - t_start > max_point_s:
            break
    synchronize(device)
    wall = time.perf_counter() - t_start
    if cuda:
        times_ms[:] = [s.elapsed_time(e) for s, e in events]
    elif wall > 0:
        # The thread's CPU clock against the wall clock over the same forwards (one thread:
        # torch's intra-op threads, if any, are not counted, so this is for 1-thread points
        # an exact share and otherwise the main thread's share).
        times_ms.cpu_share = min(1.0, (time.thread_time() - cpu0) / wall)


def summarize(times_ms: list[float], batch_size: int) -> dict[str, float]:
    """Latency statistics of one point; throughput follows from the same timed forwards."""
    p50 = statistics.median(times_ms)
    mean = statistics.fmean(times_ms)
    cv = statistics.stdev(times_ms) / mean if len(times_ms) > 1 and mean > 0 else None
    return {
        "latency_ms_p50": p50,
        "latency_ms_p90": percentile(times_ms, 90),
        "latency_ms_p99": percentile(times_ms, 99),
        "latency_ms_mean": statistics.fmean(times_ms),
        "latency_ms_stdev": statistics.stdev(times_ms) if len(times_ms) > 1 else None,
        "latency_ms_min": min(times_ms),
        "per_sample_ms_p50": p50 / batch_size,
        "throughput_samples_per_s": batch_size * len(times_ms) / (sum(times_ms) / 1000.0),
        "cv": cv,
        "noisy": cv is not None and cv > NOISY_CV,
    }


STAT_COLUMNS = (
    "latency_ms_p50",
    "latency_ms_p90",
    "latency_ms_p99",
    "latency_ms_mean",
    "latency_ms_stdev",
    "latency_ms_min",
    "per_sample_ms_p50",
    "throughput_samples_per_s",
    "cv",
    "noisy",
)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def measure_latency(
    model: nn.Module,
    device: torch.device | str,
    *,
    input_sizes: Iterable[int],
    batch_sizes: Iterable[int],
    precisions: Iterable[str] = ("fp32",),
    warmup: int = 5,
    repeats: int = 30,
    max_point_s: float | None = 10.0,
    exclusive: bool = True,
    channels_last: bool = False,
    in_chans: int = 3,
) -> list[dict[str, Any]]:
    """One row per input size x batch size x precision (see the module docstring).

    With `exclusive`, each point runs inside the device lock's exclusive window; the lock is taken
    per point, not for the whole sweep, so other trials' training is held off seconds at a time.
    """
    device = torch.device(device)
    lock = lock_for(device) if exclusive else None
    was_training = model.training
    model.eval()
    rows: list[dict[str, Any]] = []
    try:
        for precision in precisions:
            for size in input_sizes:
                for batch in batch_sizes:
                    rows.append(
                        _point(
                            model,
                            device,
                            size,
                            batch,
                            precision,
                            warmup=warmup,
                            repeats=repeats,
                            max_point_s=max_point_s,
                            lock=lock,
                            channels_last=channels_last,
                            in_chans=in_chans,
                        )
                    )
    finally:
        model.train(was_training)
    return rows


def _point(
    model: nn.Module,
    device: torch.device,
    size: int,
    batch: int,
    precision: str,
    *,
    warmup: int,
    repeats: int,
    max_point_s: float | None,
    lock: Any,
    channels_last: bool,
    in_chans: int,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "input_size": size,
        "batch_size": batch,
        "precision": precision,
        "status": "ok",
        **dict.fromkeys(STAT_COLUMNS),
        "warmup": warmup,
        "repeats": 0,
        "timer": "cuda_events" if device.type == "cuda" else "perf_counter",
        "cpu_share": None,
        "exclusive": False,
        "lock_wait_s": None,
        "device": str(device),
        "channels_last": channels_last,
        "error": None,
    }
    window_cm = lock.exclusive() if lock is not None else contextlib.nullcontext(None)
    try:
        x = torch.randn(batch, in_chans, size, size, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with window_cm as window:
            times = time_forward(
                model,
                x,
                precision=precision,
                warmup=warmup,
                repeats=repeats,
                max_point_s=max_point_s,
            )
            if window is not None:
                row["exclusive"] = window.exclusive
                row["lock_wait_s"] = window.wait_s
                if window.reason:
                    row["error"] = window.reason
        row.update(summarize(times, batch))
        row["repeats"] = len(times)
        row["cpu_share"] = getattr(times, "cpu_share", None)
    except Exception as exc:
        row["status"] = "oom" if _is_oom(exc) else "error"
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def latency_metrics(
    rows: list[dict[str, Any]], *, input_size: int, precision: str
) -> dict[str, float | None]:
    """The flat `latency/*` keys from the rows at the trial's input size and precision."""
    here = [
        r
        for r in rows
        if r["input_size"] == input_size and r["precision"] == precision and r["status"] == "ok"
    ]
    b1 = [r for r in here if r["batch_size"] == 1]
    return {
        "latency/b1_ms_p50": b1[0]["latency_ms_p50"] if b1 else None,
        "latency/b1_ms_p99": b1[0]["latency_ms_p99"] if b1 else None,
        "latency/b1_cv": b1[0]["cv"] if b1 else None,
        "latency/b1_noisy": b1[0]["noisy"] if b1 else None,
        "latency/max_samples_per_s": (
            max(r["throughput_samples_per_s"] for r in here) if here else None
        ),
    }
