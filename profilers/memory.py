"""Peak memory per region: the training epoch, evaluation, batch-1 inference.

Use: `with track_memory(device) as m: <region>` then `m.metrics("train" | "eval" | "infer")`.
Entering resets the peaks, so each figure describes its own region only:

- CPU: the process's peak resident set size (VmHWM), reset through `/proc/self/clear_refs` (Linux);
  where that reset is not possible (macOS, a locked-down /proc) the figure is the process's peak
  so far, and `mem/cpu_rss_scope` says `process` instead of `region`.
- CUDA: `torch.cuda.max_memory_allocated` / `max_memory_reserved` after `reset_peak_memory_stats`.
  Allocated = tensors alive; reserved = what PyTorch's caching allocator holds from the driver
  (>= allocated; what other processes cannot use). Neither counts the CUDA context (~300-500 MiB)
  nor memory of other processes: `nvidia-smi` shows more.

| key                                | unit | region          | meaning                                  |
|------------------------------------|------|-----------------|------------------------------------------|
| `mem/cpu_peak_rss_mb`              | MiB  | training epoch  | peak RSS of the trial process            |
| `mem/gpu_peak_allocated_mb`        | MiB  | training epoch  | peak bytes in live tensors               |
| `mem/gpu_peak_reserved_mb`         | MiB  | training epoch  | peak bytes held by the caching allocator |
| `mem/eval_cpu_peak_rss_mb`, `mem/eval_gpu_peak_allocated_mb`, `mem/eval_gpu_peak_reserved_mb` | MiB | evaluation | the same |
| `mem/infer_cpu_peak_rss_mb`, `mem/infer_gpu_peak_allocated_mb`, `mem/infer_gpu_peak_reserved_mb` | MiB | batch-1 inference | the same |
| `mem/cpu_process_peak_rss_mb`      | MiB  | trial so far    | the largest RSS seen by any region (train/eval reports only) |
| `mem/cpu_rss_scope`                | str  |                 | `region` or `process` (see above)        |
| `mem/null_reason`                  | str  |                 | why GPU fields are null (e.g. a CPU run) |

On a device without these counters the GPU fields are None with `mem/null_reason`, never 0.
In a multi-worker trial, `max_over_workers` makes each figure the maximum over the workers.
"""

from __future__ import annotations

import contextlib
import re
import resource
import sys
from pathlib import Path
from typing import Any

import torch

from profilers.metric_registry import F, S, declare

_REGIONS = {"": "the training epoch", "eval_": "evaluation", "infer_": "batch-1 inference"}
declare(
    __name__,
    {
        **{
            f"mem/{prefix}cpu_peak_rss_mb": (
                F,
                "MiB",
                f"peak resident set size of the trial process during {what}",
            )
            for prefix, what in _REGIONS.items()
        },
        **{
            f"mem/{prefix}gpu_peak_allocated_mb": (
                F,
                "MiB",
                f"torch.cuda.max_memory_allocated during {what} (null on CPU)",
            )
            for prefix, what in _REGIONS.items()
        },
        **{
            f"mem/{prefix}gpu_peak_reserved_mb": (
                F,
                "MiB",
                f"torch.cuda.max_memory_reserved during {what} (null on CPU)",
            )
            for prefix, what in _REGIONS.items()
        },
        "mem/cpu_process_peak_rss_mb": (
            F,
            "MiB",
            "largest RSS seen in any region of the trial so far",
        ),
        "mem/cpu_rss_scope": (
            S,
            "",
            "region (peak reset per region) or process (reset impossible)",
        ),
        "mem/null_reason": (S, "", "why the GPU figures are null"),
    },
)


MIB = float(2**20)  # bytes per MiB: every `_mb` figure of the project
REGIONS = {"train": "", "eval": "eval_", "infer": "infer_"}
_PROC = Path("/proc/self")
_process_peak_mb = 0.0


def _status_mb(field: str) -> float | None:
    try:
        text = (_PROC / "status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) / 1024.0 if match else None


def _rusage_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / MIB if sys.platform == "darwin" else peak / 1024.0


def reset_process_peak() -> None:
    """A new trial in a reused process: `mem/cpu_process_peak_rss_mb` starts again from now."""
    global _process_peak_mb
    _process_peak_mb = 0.0
    with contextlib.suppress(OSError):  # where the reset is refused, regions report the process
        (_PROC / "clear_refs").write_text("5")


def _reset_cpu_peak() -> bool:
    """Start a new RSS high-water mark for this process; False where the OS does not allow it."""
    global _process_peak_mb
    before = _status_mb("VmHWM")
    if before is None:
        return False
    # The reset also resets getrusage's ru_maxrss: remember the process peak first.
    _process_peak_mb = max(_process_peak_mb, before)
    try:
        (_PROC / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_peak_rss_mb() -> float:
    """The current high-water mark of this process's RSS, in MiB."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else _rusage_peak_mb()


def gpu_null_reason(device: torch.device) -> str | None:
    if device.type == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available"
    return f"device is {device.type}: GPU memory counters do not apply"


class MemoryTracker:
    """Peaks of one region; see the module docstring."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._cuda = self.device.type == "cuda" and torch.cuda.is_available()
        self.cpu_scope = "process"
        self.cpu_peak_mb: float | None = None
        self.gpu_peak_allocated_mb: float | None = None
        self.gpu_peak_reserved_mb: float | None = None

    def __enter__(self) -> MemoryTracker:
        if self._cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.cpu_scope = "region" if _reset_cpu_peak() else "process"
        return self

    def __exit__(self, *exc: Any) -> None:
        global _process_peak_mb
        if self._cuda:
            torch.cuda.synchronize(self.device)
            self.gpu_peak_allocated_mb = torch.cuda.max_memory_allocated(self.device) / MIB
            self.gpu_peak_reserved_mb = torch.cuda.max_memory_reserved(self.device) / MIB
        self.cpu_peak_mb = cpu_peak_rss_mb()
        _process_peak_mb = max(_process_peak_mb, self.cpu_peak_mb)

    def metrics(self, region: str = "train") -> dict[str, Any]:
        """Flat keys for `region` (train, eval, infer); read after the `with` block."""
        if region not in REGIONS:
            raise ValueError(f"memory region {region!r} is not one of {sorted(REGIONS)}")
        p = f"mem/{REGIONS[region]}"
        out: dict[str, Any] = {
            f"{p}cpu_peak_rss_mb": self.cpu_peak_mb,
            f"{p}gpu_peak_allocated_mb": self.gpu_peak_allocated_mb,
            f"{p}gpu_peak_reserved_mb": self.gpu_peak_reserved_mb,
            "mem/cpu_rss_scope": self.cpu_scope,
        }
        if region != "infer":
            # Per epoch only: the static profile's (earlier) value would overwrite it when static
            # metrics are merged into each epoch's report.
            out["mem/cpu_process_peak_rss_mb"] = _process_peak_mb or None
        reason = gpu_null_reason(self.device)
        if reason is not None:
            out["mem/null_reason"] = reason
        return out


def track_memory(device: torch.device | str) -> MemoryTracker:
    """`with track_memory(device) as m: ...; m.metrics(region)`."""
    return MemoryTracker(device)


def max_over_workers(metrics: dict[str, Any], device: torch.device | None = None) -> dict[str, Any]:
    """The numeric `mem/*` figures of `metrics`, each the maximum over a multi-worker trial's
    processes (torch.distributed); unchanged in a single process. A figure null on every worker
    stays null. Every worker must call it with the same keys (one all-reduce); `device` is this
    worker's (NCCL reduces on it; default: the current CUDA device under NCCL, else the CPU)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    keys = sorted(
        k
        for k, v in metrics.items()
        if k.startswith("mem/") and (v is None or isinstance(v, int | float))
    )
    if not keys:
        return metrics
    if dist.get_backend() != "nccl":
        device = torch.device("cpu")
    elif device is None or device.type != "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    values = [float("-inf") if metrics[k] is None else float(metrics[k]) for k in keys]
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    out = dict(metrics)
    for key, value in zip(keys, tensor.tolist(), strict=True):
        out[key] = None if value == float("-inf") else value
    return out
