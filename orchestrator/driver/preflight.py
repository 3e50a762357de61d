"""Resources a sweep asks for, checked against what runs it, before Ray starts or anything is written.

Without `--address` (and RAY_ADDRESS) the sweep runs on this machine: its CPUs and NVIDIA GPUs are
counted here, without Ray or torch (CUDA_VISIBLE_DEVICES caps the GPUs, as Ray caps them), and
every stage of the plan is checked before the first one runs. A trial asking for more than the
machine has would wait forever: that is bad input, exit 2. `--smoke` instead takes what the
machine has (a smoke run proves the sweep runs here). Once Ray is up, `sweep_runner` checks again
against `ray.cluster_resources()`, with the same rules (`fit_resources`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.driver.schema import SweepConfig, SweepError
from orchestrator.workers.train_workers import DRIVER_CPU, trial_demand

if TYPE_CHECKING:
    from orchestrator.driver.stages import Stage

NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def local_gpus() -> int:
    """NVIDIA GPUs this process may use: NVML's count (else the driver's /proc entries), capped by
    CUDA_VISIBLE_DEVICES as Ray caps it ("" or "NoDevFiles": none)."""
    try:
        import pynvml  # nvidia-ml-py: a thin ctypes binding, no torch

        pynvml.nvmlInit()
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no NVML library or no driver: what Ray then counts is none
        count = len(list(NVIDIA_GPUS.iterdir())) if NVIDIA_GPUS.is_dir() else 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [] if visible in ("", "NoDevFiles") else visible.split(",")
        count = min(count, len(ids))
    return count


def local_resources() -> dict[str, float]:
    """{"CPU": ..., "GPU": ...} of this machine; a Ray this process already started says its own."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        have = ray.cluster_resources()
        return {"CPU": float(have.get("CPU", 0.0)), "GPU": float(have.get("GPU", 0.0))}
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(local_gpus())}


def check_plan(plan: list[Stage], *, address: str | None) -> None:
    """Check every stage's resources against this machine before the first stage runs (in place:
    a smoke stage gets what the machine has). A cluster (`--address`, RAY_ADDRESS) is checked once
    Ray has joined it."""
    if address or os.environ.get("RAY_ADDRESS"):
        return
    have = local_resources()
    for stage in plan:
        stage.sweep = fit_resources(stage.sweep, have, local=True)


def fit_resources(sweep: SweepConfig, have: dict[str, float], *, local: bool) -> SweepConfig:
    """`sweep` when each trial fits in `have`; on a cluster (not `local`) a warning; on this
    machine a SweepError naming the key, or with --smoke a copy capped to what it has.

    A multi-worker trial takes `workers` x the per-worker resources plus its driver's sliver.
    """
    res = sweep.resources
    problems = []
    for ray_key, want in trial_demand(res).items():
        avail = float(have.get(ray_key, 0.0))
        if want > avail:
            problems.append((ray_key, want, avail))
    multi = res.workers > 1
    keys = (
        {"CPU": "cpu_per_worker", "GPU": "gpu_per_worker"}
        if multi
        else {"CPU": "cpu", "GPU": "gpu"}
    )
    if not problems or not local:
        for ray_key, want, avail in problems:
            print(f"warning: resources: {want:g} {ray_key} per trial, the cluster has {avail:g}")
        return sweep
    if sweep.smoke:
        out = sweep.model_copy(deep=True)
        for ray_key, _, avail in problems:
            # A smoke run proves the sweep runs here; it takes what this machine has.
            if multi:
                spare = avail - DRIVER_CPU if ray_key == "CPU" else avail
                capped = spare / res.workers
            else:
                capped = avail if ray_key == "GPU" else max(1.0, avail)
            key = keys[ray_key]
            print(f"smoke: resources.{key} -> {capped:g} (this machine has {avail:g} {ray_key})")
            setattr(out.resources, key, capped)
        return out
    ray_key, want, avail = problems[0]
    key = keys[ray_key]
    what = f"{want:g}"
    if multi:
        per = res.worker_cpu if ray_key == "CPU" else res.worker_gpu
        driver = f" + {DRIVER_CPU} for its driver" if ray_key == "CPU" else ""
        what = f"{res.workers} workers x {per:g}{driver} = {want:g}"
    stage = f" (stage {sweep.stage!r})" if sweep.stage else ""
    raise SweepError(
        f"resources.{key}{stage}: each trial asks for {what} {ray_key} but this machine has "
        f"{avail:g}; lower resources.{key} (fractions share a device) or join a cluster with "
        "--address"
    )
