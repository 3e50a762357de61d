"""The figures each trainable is studied by, as the end-of-run summary and `trial` print them;
no Ray, no MLflow (the `trial` command runs where neither is installed)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

# (column, header, scale): each trainable's columns, in the order its study reads them.
PEAK_MEM = "peak MB"
ACC = ("best/val/acc", "best acc", 1.0)
TRAIN_COLUMNS = (
    ACC,
    ("time/epoch_s", "epoch s", 1.0),
    ("time/samples_per_s", "samples/s", 1.0),
    ("params/total", "params M", 1e-6),
    ("flops/fwd_gmacs", "GMACs", 1.0),
    (PEAK_MEM, PEAK_MEM, 1.0),
)
COLUMNS_BY_TRAINABLE: dict[str, tuple[tuple[str, str, float], ...]] = {
    "train": TRAIN_COLUMNS,
    "finetune": TRAIN_COLUMNS,
    "lora": (
        ("params/trainable", "train M", 1e-6),
        ("params/trainable_pct", "train %", 1.0),
        ("time/step_ms_p50", "step ms", 1.0),
        (PEAK_MEM, PEAK_MEM, 1.0),
        ("merged/latency/b1_ms_p50", "merged b1 ms", 1.0),
        ACC,
    ),
    "bench": (
        ("bench/infer_batch_size", "infer batch", 1.0),
        ("bench/infer_ms_per_sample", "infer ms/sample", 1.0),
        ("bench/infer_samples_per_s", "infer samples/s", 1.0),
        ("bench/train_batch_size", "train batch", 1.0),
        ("bench/train_step_ms", "train step ms", 1.0),
        ("bench/train_samples_per_s", "train samples/s", 1.0),
        (PEAK_MEM, PEAK_MEM, 1.0),
    ),
    "prune_recover": (
        ("prune/sparsity", "sparsity", 1.0),
        ("dense/flops/fwd_gmacs", "GMACs before", 1.0),
        ("flops/fwd_gmacs", "GMACs after", 1.0),
        ("dense/val/acc", "acc before", 1.0),
        ("pruned/val/acc", "acc pruned", 1.0),
        ("recovered/val/acc", "acc recovered", 1.0),
        ACC,
    ),
}
# Where a trial's peak memory is, best source first (bench: the training step's, then inference).
PEAK_SOURCES = (
    "mem/gpu_peak_allocated_mb",
    "bench/train_gpu_peak_allocated_mb",
    "mem/cpu_peak_rss_mb",
    "bench/train_cpu_peak_rss_mb",
    "bench/infer_cpu_peak_rss_mb",
)
NOT_STARTED = "PENDING"
STOPPED = "STOPPED"


def sig(value: Any, digits: int = 4) -> str:
    """A number to `digits` significant digits (`0.0891`, `223.3`, `1.234e+05`); '-' for none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int) or (float(value).is_integer() and abs(value) < 1e6):
        return str(int(value))
    return f"{value:.{digits}g}"


def peak_memory(row: pd.Series) -> float | None:
    for key in PEAK_SOURCES:
        value = row.get(key)
        if isinstance(value, int | float) and not math.isnan(float(value)):
            return float(value)
    return None
