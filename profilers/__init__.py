"""Profilers: each measures one thing and returns flat metrics (or table rows). Imports nothing from
the rest of lvmbench.

| module          | measures                                              | keys           |
|-----------------|-------------------------------------------------------|----------------|
| `params`        | parameter counts, model bytes                         | `params/*`, `model/*` |
| `flops`         | forward MACs/FLOPs, training-step FLOPs per input size | `flops/*`, `flops` table |
| `latency`       | forward latency/throughput per size x batch x precision | `latency/*`, `latency` table |
| `memory`        | peak RSS / GPU memory per region                      | `mem/*`        |
| `step_timer`    | per-epoch time, data wait, MFU                        | `time/*`       |
| `fingerprint`   | environment that shapes the numbers                   | `env/*`        |
| `device_lock`   | exclusive window on a shared device                   | (latency rows' `exclusive`) |

`METRIC_KEYS` maps every flat key to its column type (`float64`, `int64`, `string`, `bool`) and
`METRIC_UNITS` to its unit, for the Parquet sink and the report; `metric_type` also resolves the
keyed families (`model/size_mb_<dtype>`) and tagged copies (`<tag>/flops/fwd_gmacs`, from a
profile re-run after pruning or a LoRA merge). `TABLE_COLUMNS` does the same for the `latency` and
`flops` tables.
"""

from __future__ import annotations

F, INT, S, B = "float64", "int64", "string", "bool"

# name: (type, unit)
_KEYS: dict[str, tuple[str, str]] = {
    # params.py
    "params/total": (INT, "count"),
    "params/trainable": (INT, "count"),
    "params/trainable_pct": (F, "%"),
    "model/size_mb": (F, "MiB"),
    "model/params_mb": (F, "MiB"),
    "model/buffers_mb": (F, "MiB"),
    # flops.py
    "flops/fwd_gmacs": (F, "GMAC/sample"),
    "flops/fwd_gflops": (F, "GFLOP/sample"),
    "flops/train_step_gflops": (F, "GFLOP/sample"),
    "flops/crosscheck_ratio": (F, "ratio"),
    "flops/input_size": (INT, "px"),
    "flops/input_shape": (S, ""),
    "flops/counter": (S, ""),
    "flops/unsupported_ops": (S, ""),
    "flops/error": (S, ""),
    # latency.py
    "latency/b1_ms_p50": (F, "ms"),
    "latency/b1_ms_p99": (F, "ms"),
    "latency/max_samples_per_s": (F, "samples/s"),
    "latency/exclusive": (B, ""),
    # memory.py
    **{
        f"mem/{region}{name}": (F, "MiB")
        for region in ("", "eval_", "infer_")
        for name in ("cpu_peak_rss_mb", "gpu_peak_allocated_mb", "gpu_peak_reserved_mb")
    },
    "mem/cpu_process_peak_rss_mb": (F, "MiB"),
    "mem/cpu_rss_scope": (S, ""),
    "mem/null_reason": (S, ""),
    # step_timer.py
    "time/epoch_s": (F, "s"),
    "time/samples_per_s": (F, "samples/s"),
    "time/step_ms_p50": (F, "ms"),
    "time/step_ms_p90": (F, "ms"),
    "time/data_s": (F, "s"),
    "time/compute_s": (F, "s"),
    "time/lock_wait_s": (F, "s"),
    "time/achieved_tflops": (F, "TFLOP/s"),
    "time/mfu": (F, "ratio"),
    "time/mfu_reason": (S, ""),
    # fingerprint.py
    "env/device": (S, ""),
    "env/device_name": (S, ""),
    "env/device_count": (INT, "count"),
    "env/driver_version": (S, ""),
    "env/torch_version": (S, ""),
    "env/cuda_version": (S, ""),
    "env/cudnn_version": (S, ""),
    "env/timm_version": (S, ""),
    "env/python_version": (S, ""),
    "env/hostname": (S, ""),
    "env/tf32_matmul": (B, ""),
    "env/tf32_cudnn": (B, ""),
    "env/cudnn_benchmark": (B, ""),
    "env/matmul_precision": (S, ""),
    "env/precision": (S, ""),
    "env/channels_last": (B, ""),
    "env/compile": (B, ""),
    "env/fused_attn": (S, ""),
    "env/num_threads": (INT, "count"),
    "env/cpu_count": (INT, "count"),
    # trainables/profiling.py
    "profile/static_s": (F, "s"),
    # trainables/lora_adapters.py and start_weights.py (registered here so every table agrees)
    "lora/adapter_params": (INT, "count"),
    "lora/adapted_modules": (INT, "count"),
    "lora/opt_state_mb": (F, "MiB"),
    "lora/opt_state_full_mb": (F, "MiB"),
    "lora/opt_state_saved_mb": (F, "MiB"),
    "lora/merge_max_abs_diff": (F, "abs"),
    "lora/opt_state_error": (S, ""),
    "init/from_weights": (INT, "bool"),
    "init/loaded_tensors": (INT, "count"),
    "init/head_reset": (INT, "count"),
    "init/resampled": (INT, "count"),
}

METRIC_KEYS: dict[str, str] = {k: t for k, (t, _) in _KEYS.items()}
METRIC_UNITS: dict[str, str] = {k: u for k, (_, u) in _KEYS.items()}

TABLE_COLUMNS: dict[str, dict[str, str]] = {
    "latency": {
        "tag": S,
        "input_size": INT,
        "batch_size": INT,
        "precision": S,
        "status": S,
        "latency_ms_p50": F,
        "latency_ms_p90": F,
        "latency_ms_p99": F,
        "latency_ms_mean": F,
        "latency_ms_stdev": F,
        "latency_ms_min": F,
        "per_sample_ms_p50": F,
        "throughput_samples_per_s": F,
        "warmup": INT,
        "repeats": INT,
        "timer": S,
        "exclusive": B,
        "lock_wait_s": F,
        "device": S,
        "channels_last": B,
        "error": S,
    },
    "flops": {
        "tag": S,
        "input_size": INT,
        "input_shape": S,
        "counter": S,
        "fwd_gmacs": F,
        "fwd_gflops": F,
        "train_step_gflops": F,
        "crosscheck_ratio": F,
        "unsupported_ops": S,
        "status": S,
        "error": S,
    },
}


def metric_type(key: str) -> str | None:
    """Column type of a flat key, tagged (`<tag>/<key>`) or keyed (`model/size_mb_<dtype>`) too."""
    if key in METRIC_KEYS:
        return METRIC_KEYS[key]
    if key.startswith("model/size_mb_"):
        return F
    if "/" in key:
        _, rest = key.split("/", 1)
        if rest in METRIC_KEYS or rest.startswith("model/size_mb_"):
            return metric_type(rest)
    return None
