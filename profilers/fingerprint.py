"""The environment that shapes the numbers, recorded with every trial, and known device peaks for MFU.

| key                      | type  | meaning                                                          |
|--------------------------|-------|------------------------------------------------------------------|
| `env/device`             | str   | `cpu`, `cuda`, `mps`                                             |
| `env/device_name`        | str   | GPU name from torch, or the CPU model from /proc/cpuinfo         |
| `env/device_count`       | int   | GPUs visible to the trial (after Ray's CUDA_VISIBLE_DEVICES)     |
| `env/driver_version`     | str   | NVIDIA driver (nvidia-smi), null on CPU                          |
| `env/torch_version`      | str   | torch.__version__                                                |
| `env/cuda_version`       | str   | CUDA torch was built with (null for CPU-only builds)             |
| `env/cudnn_version`      | str   | cuDNN version torch loads, null without CUDA                     |
| `env/timm_version`       | str   | timm.__version__                                                 |
| `env/python_version`     | str   | Python version                                                   |
| `env/hostname`           | str   | node name                                                        |
| `env/tf32_matmul`        | bool  | torch.backends.cuda.matmul.allow_tf32                            |
| `env/tf32_cudnn`         | bool  | torch.backends.cudnn.allow_tf32                                  |
| `env/cudnn_benchmark`    | bool  | torch.backends.cudnn.benchmark                                   |
| `env/matmul_precision`   | str   | torch.get_float32_matmul_precision()                             |
| `env/precision`          | str   | the precision the trial trains in (fp32, fp16, bf16)             |
| `env/channels_last`      | bool  | model and inputs in channels_last                                |
| `env/compile`            | bool  | model run through torch.compile                                  |
| `env/fused_attn`         | str   | attention modules using F.scaled_dot_product_attention, as `n/m` (`none` without attention modules) |
| `env/num_threads`        | int   | torch intra-op threads                                           |
| `env/cpu_count`          | int   | CPUs this process may run on (affinity), not the node's total    |
"""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
from functools import cache
from typing import Any

import torch
from torch import nn

from profilers.metric_registry import INT, B, S, declare
from profilers.rng import with_own_rng

declare(
    __name__,
    {
        "env/device": (S, "", "device type and index, e.g. cuda:0 or cpu"),
        "env/device_name": (S, "", "GPU name or CPU model"),
        "env/device_count": (INT, "count", "devices of that type visible"),
        "env/driver_version": (S, "", "NVIDIA driver version (null off CUDA)"),
        "env/torch_version": (S, "", "torch version"),
        "env/cuda_version": (S, "", "CUDA version torch was built with"),
        "env/cudnn_version": (S, "", "cuDNN version"),
        "env/timm_version": (S, "", "timm version"),
        "env/python_version": (S, "", "Python version"),
        "env/hostname": (S, "", "host the trial ran on"),
        "env/tf32_matmul": (B, "", "TF32 allowed in matmul"),
        "env/tf32_cudnn": (B, "", "TF32 allowed in cuDNN"),
        "env/cudnn_benchmark": (B, "", "cudnn.benchmark on"),
        "env/matmul_precision": (S, "", "torch.get_float32_matmul_precision()"),
        "env/precision": (S, "", "precision the trial ran in"),
        "env/channels_last": (B, "", "model and inputs in channels_last"),
        "env/compile": (B, "", "model compiled with torch.compile"),
        "env/fused_attn": (S, "", "attention modules using fused SDPA, n/m"),
        "env/num_threads": (INT, "count", "torch intra-op threads"),
        "env/cpu_count": (INT, "count", "CPUs this process may use"),
    },
)


# Dense (no sparsity) peak TFLOP/s from the vendors' data sheets, by precision. fp32 means
# TF32 tensor cores where the device has them and TF32 is on; fp32_simt without TF32.
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7, "fp32_simt": 66.9},
    "H100 PCIe": {"bf16": 756.0, "fp16": 756.0, "fp32": 378.0, "fp32_simt": 51.2},
    "H100": {"bf16": 989.4, "fp16": 989.4, "fp32": 494.7, "fp32_simt": 66.9},
    "A100": {"bf16": 312.0, "fp16": 312.0, "fp32": 156.0, "fp32_simt": 19.5},
    "L4": {"bf16": 121.0, "fp16": 121.0, "fp32": 60.0, "fp32_simt": 30.3},
    "V100": {"fp16": 125.0, "fp32": 15.7, "fp32_simt": 15.7},
    "T4": {"fp16": 65.0, "fp32": 8.1, "fp32_simt": 8.1},
}


PEAK_SOURCES = ("configured", "table", "measured")
# The probe: square matmuls grown until one takes PROBE_MIN_S, then the best of 3 rounds of
# about PROBE_S each.
PROBE_SIZES = (512, 1024, 2048, 4096, 8192)
PROBE_MIN_S = 0.02
PROBE_S = 0.1
PROBE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def peak_flops(
    device: torch.device | str,
    precision: str,
    configured_tflops: float | str | None = None,
    *,
    measure: bool = True,
) -> tuple[float | None, str | None, str | None]:
    """Peak FLOP/s of the device at `precision`: (peak, source, reason when it is None).

    `configured_tflops`: a number (source `configured`), `measure` (the probe, source `measured`),
    or None: the data sheet for known GPUs (source `table`), otherwise the probe. With
    `measure=False` the probe is not run (None and why).
    """
    if isinstance(configured_tflops, int | float):
        return float(configured_tflops) * 1e12, "configured", None
    device = torch.device(device)
    if configured_tflops is None:
        peak, reason = table_peak_flops(device, precision)
        if peak is not None:
            return peak, "table", None
    if not measure:
        return None, None, "the peak would need the matmul probe, which was not run"
    measured, reason = measure_peak_flops(device, precision)
    return measured, ("measured" if measured is not None else None), reason


def table_peak_flops(device: torch.device, precision: str) -> tuple[float | None, str | None]:
    """The vendor's dense peak for a known GPU at `precision` (None and why otherwise)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, f"no data-sheet peak for {device.type}"
    name = torch.cuda.get_device_name(device)
    key = precision
    if precision == "fp32" and not torch.backends.cuda.matmul.allow_tf32:
        key = "fp32_simt"
    for model_name, peaks in PEAK_TFLOPS.items():  # ordered: "H100 PCIe" before "H100"
        if model_name in name and key in peaks:
            return peaks[key] * 1e12, None
    return None, f"peak {precision} FLOP/s of {name!r} is not in profilers.fingerprint.PEAK_TFLOPS"


def measure_peak_flops(device: torch.device, precision: str) -> tuple[float | None, str | None]:
    """Best FLOP/s of a dense square matmul in `precision` with this process's threads.

    Cached per (device, precision, threads): a reused worker measures once. Not a data-sheet
    peak: MFU against it says how close the model gets to what this matmul reaches here.
    """
    dtype = PROBE_DTYPES.get(precision)
    if dtype is None:
        return None, f"no matmul probe for precision {precision!r}"
    return _measure(str(device), precision, torch.get_num_threads())


@cache
@with_own_rng  # runs once per process: it must not shift the random stream of the first trial
def _measure(device_name: str, precision: str, threads: int) -> tuple[float | None, str | None]:
    from profilers.step_timer import synchronize

    device = torch.device(device_name)
    dtype = PROBE_DTYPES[precision]
    try:
        for n in PROBE_SIZES:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            torch.mm(a, b)  # warm-up: kernel selection, allocation
            synchronize(device)
            t0 = time.perf_counter()
            torch.mm(a, b)
            synchronize(device)
            once = time.perf_counter() - t0
            if once >= PROBE_MIN_S or n == PROBE_SIZES[-1]:
                break
        reps = max(1, min(50, int(PROBE_S / max(once, 1e-6))))
        best = once
        for _ in range(3):
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            synchronize(device)
            best = min(best, (time.perf_counter() - t0) / reps)
        return 2.0 * n**3 / best, None
    except (RuntimeError, TypeError) as err:
        return None, f"matmul probe failed on {device_name} in {precision}: {err}"


@cache
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@cache
def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip().splitlines()[0] or None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def fused_attention(model: nn.Module | None) -> str:
    """How many attention modules (timm's `fused_attn` flag) use F.scaled_dot_product_attention."""
    if model is None:
        return "unknown"
    flags = [bool(m.fused_attn) for m in model.modules() if hasattr(m, "fused_attn")]
    return f"{sum(flags)}/{len(flags)}" if flags else "none"


def fingerprint(
    device: torch.device | str,
    *,
    precision: str,
    channels_last: bool = False,
    compile: bool = False,
    model: nn.Module | None = None,
) -> dict[str, Any]:
    """The `env/*` keys above."""
    import timm

    device = torch.device(device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    cudnn = torch.backends.cudnn.version() if cuda else None
    try:
        cpu_count = len(os.sched_getaffinity(0))
    except AttributeError:
        cpu_count = os.cpu_count() or 0
    return {
        "env/device": device.type,
        "env/device_name": torch.cuda.get_device_name(device) if cuda else _cpu_name(),
        "env/device_count": torch.cuda.device_count() if cuda else 0,
        "env/driver_version": _driver_version() if cuda else None,
        # A plain str: torch's TorchVersion would make whoever unpickles the facts (Tune's driver)
        # import torch.
        "env/torch_version": str(torch.__version__),
        "env/cuda_version": torch.version.cuda,
        "env/cudnn_version": str(cudnn) if cudnn is not None else None,
        "env/timm_version": timm.__version__,
        "env/python_version": platform.python_version(),
        "env/hostname": socket.gethostname(),
        "env/tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "env/tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "env/cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "env/matmul_precision": torch.get_float32_matmul_precision(),
        "env/precision": precision,
        "env/channels_last": bool(channels_last),
        "env/compile": bool(compile),
        "env/fused_attn": fused_attention(model),
        "env/num_threads": torch.get_num_threads(),
        "env/cpu_count": cpu_count,
    }
