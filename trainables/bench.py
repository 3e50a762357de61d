"""`bench`: what a model costs without training it (timm's `benchmark.py`, as a trainable).

One trial builds the model (as `bench.model_as` would train it: every weight, a frozen backbone,
or LoRA adapters), profiles it once (params, FLOPs, environment) and then times it on synthetic
batches made on the device, for each input size x batch size x precision:

- **inference** (`bench.modes` has `inference`): the latency profiler (`profilers.latency`:
  warm-up, repeats, exclusive window), one `latency` row per point, plus the point's peak memory;
- **training** (`training`): `bench.warmup` untimed steps, then up to `bench.steps` timed ones
  (at no fewer than 3, at most `bench.max_point_s` seconds), each split into forward (with the
  loss), backward and optimizer (step and zero_grad); one `train_bench` row per point.

Training parts are timed with CUDA events recorded on the stream between the parts (read after
one synchronize at the end of the point, so the host never stalls the queue), elsewhere with the
host clock after synchronizing the device; a step is the sum of its parts, so forward + backward
+ optimizer equals the step time by construction, and samples/s counts the timed steps only.
Each point holds the device's exclusive window (`profilers.device_lock`) and resets the memory
peaks (`profilers.memory`). An out-of-memory at a batch is a data point (`status: oom`); with
`optim.auto_batch_size` the batch steps down (timm's `decay_batch_step`, as training's probe in
`trainables.loop.auto_batch` does) until it fits, and the row keeps the batch asked for in
`requested_batch_size`.

Batch sizes and precisions are `bench.batch_sizes` / `bench.precisions`, defaulting to those of
`profilers.latency` (and the trial's precision); input sizes are `profilers.latency.input_sizes`
(default `model.img_size`). The dataset is not opened: it only sizes the head (synthetic:
`dataset.num_classes`). The trial sends one report, epoch 0, with its facts and both tables.

| key | unit | meaning |
|-----|------|---------|
| `bench/infer_*`, `bench/train_*` | | at the trial's precision and first input size, the largest batch that ran |
| `bench/oom_points` | count | points that ran out of memory (after any halving) |
| `bench/total_s` | s | seconds the whole benchmark took, model build included |
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import nn

from profilers.device_lock import lock_for
from profilers.latency import autocast_context, latency_metrics, measure_latency
from profilers.memory import track_memory
from profilers.metric_registry import INT, B, F, S, declare, declare_table
from profilers.profile_config import LatencyProfilerConfig
from profilers.step_timer import percentile, synchronize
from trainables.adapters.lora import apply_lora, count_params, lora_metrics
from trainables.config import TrialConfig
from trainables.loop.auto_batch import free_memory, next_batch_size
from trainables.loop.device import resolve_device, trial_precision
from trainables.loop.optim import build_optimizer, uses_fused
from trainables.loop.profiling import static_profile
from trainables.loop.reporting import Reporter
from trainables.models.heads import freeze_backbone
from trainables.models.start_weights import start_model

MEMORY_COLUMNS: dict[str, tuple[str, str, str]] = {
    "gpu_peak_allocated_mb": (
        F,
        "MiB",
        "torch.cuda.max_memory_allocated over the point (null on CPU)",
    ),
    "gpu_peak_reserved_mb": (
        F,
        "MiB",
        "torch.cuda.max_memory_reserved over the point (null on CPU)",
    ),
    "cpu_peak_rss_mb": (F, "MiB", "peak RSS of the trial process over the point"),
}
declare_table(
    "latency",
    __name__,
    {
        "requested_batch_size": (
            INT,
            "samples",
            "bench: the batch asked for (optim.auto_batch_size may lower it)",
        ),
        **MEMORY_COLUMNS,
    },
)
declare_table(
    "train_bench",
    __name__,
    {
        "tag": (S, "", "'' for the model the trial reports on"),
        "input_size": (INT, "px", "input side"),
        "batch_size": (INT, "samples", "batch size the point ran at"),
        "requested_batch_size": (
            INT,
            "samples",
            "the batch asked for (optim.auto_batch_size may lower it)",
        ),
        "precision": (S, "", "fp32, fp16 (with gradient scaling) or bf16 (autocast)"),
        "status": (S, "", "ok, oom (out of memory at this batch: a data point) or error"),
        "step_ms_p50": (F, "ms", "median training step: forward + backward + optimizer"),
        "step_ms_p90": (F, "ms", "90th percentile step"),
        "step_ms_mean": (F, "ms", "mean step"),
        "forward_ms_p50": (F, "ms", "median forward, loss included"),
        "backward_ms_p50": (F, "ms", "median backward"),
        "optimizer_ms_p50": (F, "ms", "median optimizer step and zero_grad"),
        "forward_ms_mean": (F, "ms", "mean forward"),
        "backward_ms_mean": (F, "ms", "mean backward"),
        "optimizer_ms_mean": (F, "ms", "mean optimizer step"),
        "samples_per_s": (F, "samples/s", "batch x timed steps / their summed time"),
        "warmup": (INT, "count", "untimed steps run first"),
        "steps": (INT, "count", "timed steps run"),
        "timer": (S, "", "cuda_events or perf_counter"),
        "exclusive": (B, "", "the point ran inside the device's exclusive window"),
        "lock_wait_s": (F, "s", "time waited for the exclusive window"),
        "device": (S, "", "device the point ran on"),
        "channels_last": (B, "", "inputs and weights in channels_last"),
        "fused_optimizer": (B, "", "the optimizer stepped with torch's fused kernel (optim.fused)"),
        **MEMORY_COLUMNS,
        "error": (S, "", "what failed"),
    },
)
_SUMMARY = {
    "batch_size": (INT, "samples", "batch size of the figures beside it"),
    "gpu_peak_allocated_mb": (F, "MiB", "peak GPU memory allocated at that batch (null on CPU)"),
    "cpu_peak_rss_mb": (F, "MiB", "peak RSS of the process at that batch"),
}
declare(
    __name__,
    {
        **{f"bench/infer_{k}": v for k, v in _SUMMARY.items()},
        "bench/infer_ms_per_sample": (F, "ms", "median forward latency / batch size"),
        "bench/infer_samples_per_s": (F, "samples/s", "inference throughput (the seed's FPS)"),
        **{f"bench/train_{k}": v for k, v in _SUMMARY.items()},
        "bench/train_step_ms": (F, "ms", "median training step (the seed's ms/batch)"),
        "bench/train_samples_per_s": (F, "samples/s", "training throughput"),
        "bench/oom_points": (INT, "count", "points that ran out of memory"),
        "bench/total_s": (F, "s", "seconds the benchmark took, model build included"),
    },
)

# Classes of the registered datasets that need not be opened to know them.
KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}


@dataclass(frozen=True)
class BenchPlan:
    """The points a bench trial times."""

    input_sizes: list[int]
    batch_sizes: list[int]
    precisions: list[str]
    latency: LatencyProfilerConfig
    modes: list[str]


def bench_plan(cfg: TrialConfig, device: torch.device) -> BenchPlan:
    lat = cfg.profilers.latency or LatencyProfilerConfig()
    bench = cfg.bench
    return BenchPlan(
        input_sizes=list(lat.input_sizes or [cfg.model.img_size]),
        batch_sizes=list(bench.batch_sizes or lat.batch_sizes),
        precisions=list(bench.precisions or lat.precisions or [trial_precision(cfg, device)]),
        latency=lat,
        modes=list(bench.modes),
    )


def run(config: dict[str, Any], reporter: Reporter) -> None:
    t0 = time.perf_counter()
    cfg = TrialConfig.model_validate(config)
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    plan = bench_plan(cfg, device)
    classes = num_classes(cfg)
    model, facts, base_params = bench_model(cfg, classes)
    static, tables = static_profile(model, _static_only(cfg), device)
    facts.update(static)
    if cfg.bench.model_as == "lora":
        facts.update(lora_metrics(model, base_params, cfg.optim))
    options = cfg.model.compile_options()
    # Warm-up absorbs the compile; the parts of a compiled step stay forward/backward/optimizer.
    timed: nn.Module = torch.compile(model, **options) if options is not None else model
    infer: list[dict[str, Any]] = []
    train: list[dict[str, Any]] = []
    if "inference" in plan.modes:
        infer = inference_rows(timed, device, plan, cfg)
        tables["latency"] = infer
        facts.update(
            latency_metrics(infer, input_size=plan.input_sizes[0], precision=plan.precisions[0])
        )
    if "training" in plan.modes:
        train = training_rows(timed, device, plan, cfg, classes)
        tables["train_bench"] = train
    facts.update(summary(infer, train, plan, trial_precision(cfg, device)))
    facts["bench/total_s"] = time.perf_counter() - t0
    reporter.report({"epoch": 0}, facts=facts, tables=tables)


def num_classes(cfg: TrialConfig) -> int:
    """Classes of the trial's dataset, without opening it where the name says it."""
    name = cfg.dataset.name
    if name == "synthetic":
        return cfg.dataset.num_classes
    if name in KNOWN_CLASSES:
        return KNOWN_CLASSES[name]
    from trainables.data.loaders import open_data

    return open_data(cfg.dataset, cfg.model.img_size, seed=cfg.seed).num_classes


def bench_model(cfg: TrialConfig, classes: int) -> tuple[nn.Module, dict[str, Any], int]:
    """The model as `bench.model_as` would train it, its `init/*` facts, and its parameter
    count before any adapter (what a full fine-tune trains)."""
    model, facts = start_model(cfg, classes)
    base_params = count_params(model)[0]
    if cfg.bench.model_as == "finetune" and cfg.finetune.freeze_backbone:
        freeze_backbone(model)
    elif cfg.bench.model_as == "lora":
        model = apply_lora(model, cfg.lora)
    return model, facts, base_params


def _static_only(cfg: TrialConfig) -> TrialConfig:
    """Params, FLOPs and the environment: the bench times latency and memory itself."""
    out = cfg.model_copy(deep=True)
    out.profilers.latency = None
    out.profilers.memory = None
    return out


def _memory(mem: Any) -> dict[str, Any]:
    return {
        "gpu_peak_allocated_mb": mem.gpu_peak_allocated_mb,
        "gpu_peak_reserved_mb": mem.gpu_peak_reserved_mb,
        "cpu_peak_rss_mb": mem.cpu_peak_mb,
    }


def _next_batch(cfg: TrialConfig, row: dict[str, Any], device: torch.device) -> int | None:
    """With `optim.auto_batch_size`, the batch to try after an OOM (timm's decay step, as
    training's own probe does); None when the row stands."""
    if row["status"] != "oom" or not cfg.optim.auto_batch_size:
        return None
    free_memory(device)
    smaller = next_batch_size(row["batch_size"])
    return smaller if smaller >= 1 else None


def inference_rows(
    model: nn.Module, device: torch.device, plan: BenchPlan, cfg: TrialConfig
) -> list[dict[str, Any]]:
    """One `latency` row per point, through the latency profiler, with the point's peak memory."""
    lat = plan.latency
    rows = []
    for precision in plan.precisions:
        for size in plan.input_sizes:
            for requested in plan.batch_sizes:
                batch: int | None = requested
                while batch is not None:
                    with track_memory(device) as mem:
                        row = measure_latency(
                            model,
                            device,
                            input_sizes=[size],
                            batch_sizes=[batch],
                            precisions=[precision],
                            warmup=lat.warmup,
                            repeats=lat.repeats,
                            max_point_s=lat.max_point_s,
                            exclusive=lat.exclusive,
                            channels_last=cfg.model.channels_last,
                        )[0]
                    batch = _next_batch(cfg, row, device)
                row.update({"tag": "", "requested_batch_size": requested, **_memory(mem)})
                rows.append(row)
    return rows


def training_rows(
    model: nn.Module, device: torch.device, plan: BenchPlan, cfg: TrialConfig, classes: int
) -> list[dict[str, Any]]:
    """One `train_bench` row per point (see the module docstring)."""
    rows = []
    for precision in plan.precisions:
        for size in plan.input_sizes:
            for requested in plan.batch_sizes:
                batch: int | None = requested
                while batch is not None:
                    row = train_point(model, device, cfg, size, batch, precision, classes)
                    batch = _next_batch(cfg, row, device)
                row["requested_batch_size"] = requested
                rows.append(row)
    return rows


def train_point(
    model: nn.Module,
    device: torch.device,
    cfg: TrialConfig,
    size: int,
    batch: int,
    precision: str,
    classes: int,
) -> dict[str, Any]:
    bench = cfg.bench
    row = _train_row(device, cfg, size, batch, precision)
    lock = (
        lock_for(device) if (cfg.profilers.latency or LatencyProfilerConfig()).exclusive else None
    )
    was_training = model.training
    model.train()
    optimizer = None
    try:
        if precision == "fp16" and device.type != "cuda":
            raise ValueError(
                f"precision fp16 needs a CUDA device (this point ran on {device.type})"
            )
        optimizer = build_optimizer(model, cfg)
        row["fused_optimizer"] = uses_fused(optimizer)
        window_cm = lock.exclusive() if lock is not None else contextlib.nullcontext(None)
        with window_cm as window, track_memory(device) as mem:
            x = torch.randn(batch, 3, size, size, device=device)
            if cfg.model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, classes, (batch,), device=device)
            parts = time_train_steps(
                model,
                optimizer,
                x,
                y,
                precision=precision,
                warmup=bench.warmup,
                steps=bench.steps,
                max_point_s=bench.max_point_s,
            )
        if window is not None:
            row["exclusive"] = window.exclusive
            row["lock_wait_s"] = window.wait_s
            if window.reason:
                row["error"] = window.reason
        row.update(summarize_steps(parts, batch))
        row.update(_memory(mem))
    except Exception as exc:
        oom = isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()
        row["status"] = "oom" if oom else "error"
        row["error"] = f"{type(exc).__name__}: {exc}"[:500]
    finally:
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        del optimizer
        model.train(was_training)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _train_row(
    device: torch.device, cfg: TrialConfig, size: int, batch: int, precision: str
) -> dict[str, Any]:
    """A `train_bench` row before its point is measured."""
    return {
        "tag": "",
        "input_size": size,
        "batch_size": batch,
        "precision": precision,
        "status": "ok",
        "warmup": cfg.bench.warmup,
        "steps": 0,
        "timer": "cuda_events" if device.type == "cuda" else "perf_counter",
        "exclusive": False,
        "lock_wait_s": None,
        "device": str(device),
        "channels_last": cfg.model.channels_last,
        "fused_optimizer": None,
        "error": None,
    }


def time_train_steps(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    precision: str = "fp32",
    warmup: int = 5,
    steps: int = 20,
    max_point_s: float | None = 10.0,
) -> list[tuple[float, float, float]]:
    """(forward, backward, optimizer) milliseconds of each timed training step on (x, y)."""
    device = x.device
    cuda = device.type == "cuda"
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    marks: list[Any] = []

    def mark() -> None:
        if cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            marks.append(event)
        else:
            synchronize(device)
            marks.append(time.perf_counter())

    def step(timed: bool) -> None:
        if timed:
            mark()
        with autocast_context(device, precision):
            out = model(x)
            if isinstance(out, tuple | list):
                out = out[0]
        loss = loss_fn(out.float(), y)
        if timed:
            mark()
        (scaler.scale(loss) if scaler is not None else loss).backward()
        if timed:
            mark()
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if timed:
            mark()

    for _ in range(warmup):
        step(False)
    synchronize(device)
    t_start = time.perf_counter()
    for i in range(steps):
        step(True)
        # The budget reads the host clock: on CUDA it runs ahead of the device by the queue.
        if max_point_s is not None and i >= 2 and time.perf_counter() - t_start > max_point_s:
            break
    synchronize(device)
    return _durations(marks, cuda)


def _durations(marks: list[Any], cuda: bool) -> list[tuple[float, float, float]]:
    """(forward, backward, optimizer) ms per step from its four marks (CUDA events or clocks)."""
    out = []
    for j in range(0, len(marks), 4):
        a, b, c, d = marks[j : j + 4]
        if cuda:
            out.append((a.elapsed_time(b), b.elapsed_time(c), c.elapsed_time(d)))
        else:
            out.append(((b - a) * 1e3, (c - b) * 1e3, (d - c) * 1e3))
    return out


def summarize_steps(parts: list[tuple[float, float, float]], batch: int) -> dict[str, Any]:
    fwd, bwd, opt = (list(p) for p in zip(*parts, strict=True))
    step = [sum(p) for p in parts]
    return {
        "steps": len(parts),
        "step_ms_p50": statistics.median(step),
        "step_ms_p90": percentile(step, 90),
        "step_ms_mean": statistics.fmean(step),
        "forward_ms_p50": statistics.median(fwd),
        "backward_ms_p50": statistics.median(bwd),
        "optimizer_ms_p50": statistics.median(opt),
        "forward_ms_mean": statistics.fmean(fwd),
        "backward_ms_mean": statistics.fmean(bwd),
        "optimizer_ms_mean": statistics.fmean(opt),
        "samples_per_s": batch * len(step) / (sum(step) / 1e3),
    }


def summary(
    infer: list[dict[str, Any]], train: list[dict[str, Any]], plan: BenchPlan, precision: str
) -> dict[str, Any]:
    """The `bench/*` facts: at the trial's precision and first input size, the largest batch
    that ran (None, never 0, where no point ran)."""
    want = precision if precision in plan.precisions else plan.precisions[0]
    out: dict[str, Any] = {}

    def pick(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        ok = [
            r
            for r in rows
            if r["status"] == "ok"
            and r["precision"] == want
            and r["input_size"] == plan.input_sizes[0]
        ]
        return max(ok, key=lambda r: r["batch_size"]) if ok else None

    best = pick(infer)
    out["bench/infer_batch_size"] = best["batch_size"] if best else None
    out["bench/infer_ms_per_sample"] = best["per_sample_ms_p50"] if best else None
    out["bench/infer_samples_per_s"] = best["throughput_samples_per_s"] if best else None
    best_t = pick(train)
    out["bench/train_batch_size"] = best_t["batch_size"] if best_t else None
    out["bench/train_step_ms"] = best_t["step_ms_p50"] if best_t else None
    out["bench/train_samples_per_s"] = best_t["samples_per_s"] if best_t else None
    for prefix, row in (("infer", best), ("train", best_t)):
        for key in ("gpu_peak_allocated_mb", "cpu_peak_rss_mb"):
            out[f"bench/{prefix}_{key}"] = row.get(key) if row else None
    out["bench/oom_points"] = sum(1 for r in [*infer, *train] if r["status"] == "oom")
    return out
