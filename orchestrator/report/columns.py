"""Every table and column name the report reads, in one place.

The report degrades gracefully: a section appears only when the columns it needs exist and hold
at least one value. Where a figure may be stored under more than one name (the producers of the
non-epochs tables are still settling theirs), a tuple lists the candidates in order of preference
and the first present one wins.
"""

from __future__ import annotations

# Tables: one directory per table under a results directory (DESIGN.md "Parquet tables").
EPOCHS = "epochs"
TRIALS = "trials"
LATENCY = "latency"
SENSITIVITY = "sensitivity"
WEIGHTS = "weights"
TABLES = (EPOCHS, TRIALS, LATENCY, SENSITIVITY, WEIGHTS, "flops")

# Keys present in every row.
SWEEP = "sweep"
TRIAL_ID = "trial_id"
EPOCH = "epoch"
STAGE = "stage"
SMOKE = "smoke"
STATUS = "status"
ERROR = "error"
KEY = (SWEEP, TRIAL_ID)

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

# Per-epoch metrics (DESIGN.md "Metric names").
TRAIN_LOSS = "train/loss"
TRAIN_ACC = "train/acc"
VAL_LOSS = "val/loss"
VAL_ACC = "val/acc"
VAL_F1 = "val/f1_macro"
EPOCH_S = "time/epoch_s"
SAMPLES_PER_S = "time/samples_per_s"
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

# Best-over-epochs metrics in `trials` are stored as `best/<metric>`.
BEST_PREFIX = "best/"
# Direction of "best" for the metrics the report ranks by.
HIGHER_IS_BETTER = {
    TRAIN_ACC: True,
    VAL_ACC: True,
    VAL_F1: True,
    TRAIN_LOSS: False,
    VAL_LOSS: False,
}
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
PRUNED_ACC = ("pruned/val/acc", "prune/val_acc_pruned", "prune/acc_pruned")
DENSE_ACC = ("dense/val/acc", "prune/val_acc_before", "prune/acc_before")
RECOVERED_ACC = ("recovered/val/acc",)
# The dense model's own profile, drawn as a reference line beside the pruned model's figures.
DENSE_PREFIX = "dense/"

# A latency figure already folded into `trials` (batch size 1, the trial's input size).
TRIAL_LATENCY_MS = ("latency/b1_ms_p50", "latency/ms_p50", "latency/bs1_ms_p50")

# `flops` table: FLOPs per input size (the flat `flops/*` keys describe the trial's own size).
FLOPS = "flops"
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
LAT_STD = ("latency_ms_stdev", "latency_ms_std")
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
SENS_ACC = ("acc", "val/acc")
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
