"""Every table and column name the report reads, in one place.

Table names, key columns and the best-of list come from the table contract the sinks write by
(`orchestrator.tables`); column units from the metric registry (`orchestrator.tables.unit`).
The report degrades gracefully: a section appears only when the columns it needs exist and hold
at least one value. A tuple lists the columns a figure may come from, first present wins.
"""

from __future__ import annotations

from orchestrator.tables import (
    BEST_OF,
    BEST_PREFIX,
    EPOCH_KEY,
    EPOCHS,
    FLOPS,
    KEY_COLUMNS,
    LATENCY,
    SENSITIVITY,
    TABLES,
    TRIALS,
    WEIGHTS,
    unit,
)

__all__ = [
    "BEST_PREFIX",
    "EPOCHS",
    "FLOPS",
    "LATENCY",
    "SENSITIVITY",
    "TABLES",
    "TRIALS",
    "WEIGHTS",
    "unit",
]

# Keys present in every row.
SWEEP, TRIAL_ID = KEY_COLUMNS
EPOCH = EPOCH_KEY
STAGE = "stage"
SMOKE = "smoke"
STATUS = "status"
ERROR = "error"
KEY = KEY_COLUMNS

# Top-level config keys without a dot; all other config columns are dotted (`optim.lr`).
CONFIG_TOP_LEVEL = ("trainable", "precision", "device", "seed", "stage")
MODEL_NAME = "model.name"
IMG_SIZE = "model.img_size"
LORA_RANK = "lora.rank"
PRUNE_METHOD = "prune.method"
PRUNE_RATIO = "prune.ratio"
TRAINABLE = "trainable"
# Where a later stage's trial started (`start/checkpoint`, `start/trial_id`, `start/stage`): facts
# of the run, never part of a trial's label.
START_PREFIX = ("start.", "start/")
# Config keys that change the network itself (so latency is "per model"), not how it is trained.
ARCH_PREFIXES = ("model.", "lora.", "prune.", "precision")
# Statuses of a trial that did not finish; any non-empty `error` also marks a failure.
FAILED_STATUSES = ("error", "errored", "failed", "oom", "nan", "timeout", "killed")

# Per-epoch metrics (docs/profilers-and-metrics.md).
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_F1 = "val/f1_macro"
EPOCH_S = "time/epoch_s"
SAMPLES_PER_S = "time/samples_per_s"
TOTAL_S = "time/total_s"
COST_USD = "cost/usd"  # with a `cost:` price in the sweep file (orchestrator/driver/objectives.py)
USD_PER_POINT = "usd per accuracy point"  # the report's: cost/usd / (100 x best/val/acc)
STEP_MS_P50 = "time/step_ms_p50"
CPU_RSS_MB = "mem/cpu_peak_rss_mb"
GPU_ALLOC_MB = "mem/gpu_peak_allocated_mb"
GPU_RESERVED_MB = "mem/gpu_peak_reserved_mb"
GMACS = "flops/fwd_gmacs"
GFLOPS = "flops/fwd_gflops"
PARAMS_TOTAL = "params/total"
PARAMS_TRAINABLE = "params/trainable"
TRAINABLE_PCT = "params/trainable_pct"
SPARSITY = "prune/sparsity"

# Best-over-epochs metrics in `trials` are stored as `best/<metric>` (BEST_PREFIX); the
# direction of "best" for each is the sinks' own.
HIGHER_IS_BETTER = {metric: mode == "max" for metric, mode in BEST_OF.items()}
# Memory columns (`mem/..._mb`) are peaks: a trial's value is the maximum over its epochs.
MEM_PREFIX = "mem/"
MEM_SUFFIX = "_mb"
CPU_PROCESS_RSS_MB = "mem/cpu_process_peak_rss_mb"
# A trial's "peak memory" (for the Pareto plots), most telling first: (column, axis words).
PEAK_MEM_SOURCES = (
    (GPU_ALLOC_MB, "peak GPU memory allocated, training (MiB)"),
    (CPU_RSS_MB, "peak CPU RSS, training (MiB)"),
    (CPU_PROCESS_RSS_MB, "peak CPU RSS of the trial process (MiB)"),
    ("mem/infer_gpu_peak_allocated_mb", "peak GPU memory allocated, batch-1 inference (MiB)"),
    ("mem/infer_cpu_peak_rss_mb", "peak CPU RSS, batch-1 inference (MiB)"),
)
# Bars of the memory figure: the GPU ones when any trial has them, else the CPU ones.
GPU_MEM_BARS = (
    (GPU_ALLOC_MB, "training, allocated"),
    (GPU_RESERVED_MB, "training, reserved"),
    ("mem/eval_gpu_peak_allocated_mb", "evaluation, allocated"),
    ("mem/eval_gpu_peak_reserved_mb", "evaluation, reserved"),
    ("mem/infer_gpu_peak_allocated_mb", "batch-1 inference, allocated"),
    ("mem/infer_gpu_peak_reserved_mb", "batch-1 inference, reserved"),
)
CPU_MEM_BARS = (
    (CPU_RSS_MB, "training"),
    ("mem/eval_cpu_peak_rss_mb", "evaluation"),
    ("mem/infer_cpu_peak_rss_mb", "batch-1 inference"),
    (CPU_PROCESS_RSS_MB, "trial process"),
)

# Environment fingerprint columns in `trials`.
ENV_PREFIX = "env/"

# Accuracy of a pruned model: before pruning (dense), right after it, after recovery. Without a
# `recovered/` figure the trial's best `val/acc` stands for the recovered accuracy.
PRUNED_ACC = ("pruned/val/acc",)
DENSE_ACC = ("dense/val/acc",)
RECOVERED_ACC = ("recovered/val/acc",)
# The dense model's own profile, drawn as a reference line beside the pruned model's figures.
DENSE_PREFIX = "dense/"

# A latency figure already folded into `trials` (batch size 1, the trial's input size).
TRIAL_LATENCY_MS = ("latency/b1_ms_p50",)

# `flops` table: FLOPs per input size (the flat `flops/*` keys describe the trial's own size).
F_INPUT_SIZE = "input_size"
F_GMACS = "fwd_gmacs"

# `latency` table: trial x input size x batch size x precision.
LAT_INPUT_SIZE = "input_size"
LAT_BATCH_SIZE = "batch_size"
LAT_PRECISION = "precision"
LAT_P50 = "latency_ms_p50"
LAT_P90 = "latency_ms_p90"
LAT_P99 = "latency_ms_p99"
LAT_THROUGHPUT = "throughput_samples_per_s"
LAT_EXCLUSIVE = "exclusive"
LAT_STD = ("latency_ms_stdev",)
# A point's own spread (stdev / mean) and whether it is above profilers.latency.NOISY_CV.
LAT_CV = "cv"
LAT_NOISY = "noisy"
LAT_PER_SAMPLE = "per_sample_ms_p50"
# Rows of a profile taken before a change (e.g. "dense" before pruning) carry a tag; the untagged
# rows describe the model the trial reports on, and they are the ones plotted.
LAT_TAG = "tag"

# `sensitivity` table: layer x ratio -> accuracy (drop).
SENS_LAYER = "layer"
SENS_RATIO = "ratio"
SENS_ACC = ("acc",)
SENS_DROP = "acc_drop"
SENS_METHOD = "method"

# `weights` table: histogram of one layer's weights in one phase.
W_LAYER = "layer"
W_PHASE = "phase"
W_BIN_LEFT = "bin_left"
W_BIN_RIGHT = "bin_right"
W_COUNT = "count"
W_PHASES = ("before", "pruned", "recovered")

# What the report adds to a trial's row (not stored in Parquet).
LABEL = "label"
MODEL_LABEL = "model label"  # the label from config keys that change the network only
N_EPOCHS = "epochs"
LATENCY_MS = "latency_ms_p50 (bs 1)"
PEAK_MEM_MB = "peak memory (MiB)"
PEAK_MEM_SOURCE = "peak memory source"  # which PEAK_MEM_SOURCES column PEAK_MEM_MB came from

# "Within one point of the best accuracy": one percentage point, accuracy stored as a fraction.
ONE_POINT = 0.01
