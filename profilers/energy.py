"""Energy counters: joules over a region, from the device's own cumulative counter; never fatal.

- GPU (CUDA): NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, millijoules
  since the driver loaded; Volta and later) of the trial's GPU, through `nvidia-ml-py` (`pynvml`,
  imported only when a CUDA device is measured).
- CPU: RAPL package domains under `/sys/class/powercap` (`intel-rapl:N/energy_uj`, microjoules,
  wrapping at `max_energy_range_uj`). RAPL counts the whole package(s): other processes on the
  same sockets are in it.

Where no counter is readable (no powercap, a counter only root may read, a GPU without the
counter) every joule figure is null and `energy/reason` says why; reading never raises.

| key                          | unit | per          | meaning                                        |
|------------------------------|------|--------------|------------------------------------------------|
| `energy/train_j`             | J    | epoch        | energy of the epoch's training loop            |
| `energy/eval_j`              | J    | epoch        | energy of the epoch's evaluation               |
| `energy/epoch_j`             | J    | epoch        | train + eval                                   |
| `energy/train_j_per_sample`  | J    | epoch        | `energy/train_j` / `train/samples`             |
| `energy/infer_j_per_sample`  | J    | epoch        | `energy/eval_j` / `val/samples` (batched inference) |
| `energy/trial_j`             | J    | trial        | start to end of the trial in this process      |
| `energy/source`              | text | trial        | the counter(s) read, e.g. `nvml:0`, `rapl:package-0` |
| `energy/reason`              | text | trial        | why the figures are null (null when measured)  |
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from profilers.metric_registry import F, S, declare

POWERCAP = Path("/sys/class/powercap")
# Top-level RAPL zones only (intel-rapl:0, amd-rapl:1): their sub-zones (cores, dram) are parts
# or neighbours of a package and would be counted twice.
_PACKAGE_ZONE = re.compile(r"^[a-z]+-rapl:\d+$")

declare(
    __name__,
    {
        "energy/train_j": (F, "J", "energy of the epoch's training loop (device counter)"),
        "energy/eval_j": (F, "J", "energy of the epoch's evaluation"),
        "energy/epoch_j": (F, "J", "energy of the epoch: training + evaluation"),
        "energy/train_j_per_sample": (F, "J", "energy/train_j / train/samples"),
        "energy/infer_j_per_sample": (
            F,
            "J",
            "energy/eval_j / val/samples: joules per (batched) inference",
        ),
        "energy/trial_j": (F, "J", "energy of the whole trial in this process (per trial)"),
        "energy/source": (S, "", "the energy counter(s) read: nvml:<index>, rapl:<zone>"),
        "energy/reason": (S, "", "why the energy figures are null (null when measured)"),
    },
)


@dataclass
class Counter:
    """One cumulative counter: `read()` gives its value in joules; `span` its wrap range."""

    name: str
    read_j: Any  # () -> float
    span_j: float | None = None  # the value at which it wraps to 0 (None: it does not)


def delta_j(before: float, after: float, span_j: float | None) -> float:
    """Joules between two readings of a counter that wraps at `span_j` (at most once between)."""
    if after >= before:
        return after - before
    if span_j is None:
        raise ValueError(f"counter went back from {before} to {after} and has no wrap range")
    return after + span_j - before


def rapl_counters(root: Path = POWERCAP) -> tuple[list[Counter], str | None]:
    """The readable RAPL package counters under `root`, or none and the reason."""
    if not root.is_dir():
        return [], f"no {root} (no RAPL powercap interface on this machine)"
    zones = sorted(p for p in root.iterdir() if _PACKAGE_ZONE.match(p.name))
    if not zones:
        return [], f"no RAPL package zone under {root}"
    counters, problems = [], []
    for zone in zones:
        energy = zone / "energy_uj"
        try:
            energy.read_text()
            span = int((zone / "max_energy_range_uj").read_text()) / 1e6
        except (OSError, ValueError) as err:
            problems.append(f"{energy}: {getattr(err, 'strerror', None) or err}")
            continue
        label = _zone_label(zone)
        counters.append(Counter(f"rapl:{label}", _uj_reader(energy), span))
    if not counters:
        return [], "RAPL counters not readable (" + "; ".join(problems) + ")"
    return counters, None


def _zone_label(zone: Path) -> str:
    try:
        return zone.joinpath("name").read_text().strip() or zone.name
    except OSError:
        return zone.name


def _uj_reader(path: Path) -> Any:
    def read() -> float:
        return int(path.read_text()) / 1e6

    return read


def nvml_counters(device_index: int) -> tuple[list[Counter], str | None]:
    """NVML's total-energy counter of CUDA device `device_index`, or none and the reason."""
    try:
        import pynvml
    except ImportError:
        return [], "nvidia-ml-py (pynvml) is not installed"
    try:
        pynvml.nvmlInit()
        handle = _nvml_handle(pynvml, device_index)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception as err:  # NVMLError_NotSupported (pre-Volta), no driver, ...
        return [], f"NVML total-energy counter not readable: {err}"

    def read() -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3

    return [Counter(f"nvml:{device_index}", read, None)], None


def _nvml_handle(pynvml: Any, device_index: int) -> Any:
    """NVML counts every GPU of the machine; CUDA only the visible ones: match by UUID."""
    try:
        import torch

        uuid = str(torch.cuda.get_device_properties(device_index).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
    except Exception:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        index = (
            int(ids[device_index])
            if device_index < len(ids) and ids[device_index].isdigit()
            else device_index
        )
        return pynvml.nvmlDeviceGetHandleByIndex(index)


@dataclass
class EnergyMeter:
    """Reads a set of counters; `reading()` then `joules_since(reading)`. Never raises."""

    counters: list[Counter]
    reason: str | None = None
    _failed: str | None = field(default=None, repr=False)

    @property
    def source(self) -> str | None:
        return "+".join(c.name for c in self.counters) or None

    def why_null(self) -> str | None:
        return self.reason or self._failed

    def reading(self) -> list[float] | None:
        if not self.counters or self._failed:
            return None
        try:
            return [c.read_j() for c in self.counters]
        except Exception as err:  # a counter that vanished or turned unreadable mid-trial
            self._failed = f"energy counter read failed: {err}"
            return None

    def joules_since(self, before: list[float] | None) -> float | None:
        after = self.reading()
        if before is None or after is None:
            return None
        try:
            return sum(
                delta_j(b, a, c.span_j)
                for b, a, c in zip(before, after, self.counters, strict=True)
            )
        except ValueError as err:
            self._failed = str(err)
            return None


_METERS: dict[str, EnergyMeter] = {}


def meter_for(device: Any) -> EnergyMeter:
    """The meter of a torch device (`cuda:N` -> NVML, `cpu` -> RAPL), one per process and device."""
    kind = getattr(device, "type", str(device).split(":")[0])
    index = getattr(device, "index", None)
    key = f"{kind}:{index or 0}"
    if key not in _METERS:
        if kind == "cuda":
            counters, reason = nvml_counters(index or 0)
        elif kind == "cpu":
            counters, reason = rapl_counters()
        else:
            counters, reason = [], f"no energy counter for device type {kind}"
        _METERS[key] = EnergyMeter(counters, reason)
    return _METERS[key]


def epoch_energy(metrics: dict[str, Any]) -> dict[str, Any]:
    """`energy/epoch_j` and the per-sample figures from an epoch's `energy/train_j` and
    `energy/eval_j` and its sample counts (null where a part is null)."""
    train, evaluation = metrics.get("energy/train_j"), metrics.get("energy/eval_j")
    n_train, n_val = metrics.get("train/samples"), metrics.get("val/samples")
    return {
        "energy/epoch_j": None if train is None or evaluation is None else train + evaluation,
        "energy/train_j_per_sample": train / n_train if train is not None and n_train else None,
        "energy/infer_j_per_sample": (
            evaluation / n_val if evaluation is not None and n_val else None
        ),
    }


def trial_energy(meter: EnergyMeter, started: list[float] | None) -> dict[str, Any]:
    """The trial-end figures: joules since `started` (a reading), the source, the reason."""
    joules = meter.joules_since(started)
    return {
        "energy/trial_j": joules,
        "energy/source": meter.source if joules is not None else None,
        "energy/reason": None if joules is not None else meter.why_null() or "no counter reading",
    }
