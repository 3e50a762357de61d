"""Turns a trial's `profilers:` section into calls to the profilers.

- `static_profile(model, cfg, device, tag=...)`: params, FLOPs per input size, latency per
  size x batch x precision, batch-1 inference memory and the environment fingerprint; once per
  trial, and again (with a `tag`) where the model changes, e.g. after pruning or a LoRA merge.
- `epoch_timer(cfg, device, static_metrics)`: the StepTimer for the epoch loop, with MFU inputs and
  the device lock.
- `profiled_region(cfg, device, region, metrics)`: peak memory of a training epoch or evaluation
  into `metrics`; evaluation also holds the device shared (see `profilers.device_lock`).

Keys and units: declared by each profiler (`profilers.metric_registry`); docs/profilers-and-metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from torch import nn

from profilers.device_lock import lock_for
from profilers.energy import epoch_energy, meter_for
from profilers.fingerprint import fingerprint, peak_flops
from profilers.flops import flops_metrics, flops_rows
from profilers.latency import autocast_context, latency_metrics, measure_latency
from profilers.memory import track_memory
from profilers.metric_registry import INT, B, F, S, declare
from profilers.params import param_metrics
from profilers.rng import with_own_rng
from profilers.step_timer import StepTimer
from trainables.config import TrialConfig
from trainables.loop.device import trial_precision
from trainables.models.create import has_attention_switch

INFER_MEMORY_FORWARDS = 3

declare(
    __name__,
    {
        "profile/static_s": (F, "s", "seconds the static profile took"),
        "env/compile_mode": (S, "", "torch.compile mode/backend (null when not compiled)"),
        "env/attention": (
            S,
            "",
            "model.attention asked for, and `(no effect)` without timm attention",
        ),
        "env/fused_optimizer": (
            B,
            "",
            "the optimizer stepped with torch's fused kernel (optim.fused)",
        ),
        "env/grad_accum": (INT, "count", "optimizer steps accumulate this many batches"),
        "env/num_workers": (INT, "count", "DataLoader worker processes (0 with on_device)"),
        "env/pin_memory": (B, "", "DataLoader pin_memory"),
        "env/prefetch_factor": (
            INT,
            "count",
            "batches each loader worker prefetches (null = torch's)",
        ),
        "env/persistent_workers": (B, "", "loader workers kept between epochs"),
        "env/on_device": (B, "", "images held, augmented and batched on the trial's device"),
    },
)


def switch_facts(cfg: TrialConfig, model: nn.Module | None = None) -> dict[str, Any]:
    """The speed switches a trial ran with, as `env/*` facts beside the environment's."""
    ds = cfg.dataset
    attention = cfg.model.attention
    if attention != "auto" and model is not None and not has_attention_switch(model):
        attention += " (no effect: no timm attention modules)"
    options = cfg.model.compile_options()
    loader = not ds.on_device
    return {
        "env/compile_mode": None
        if options is None
        else f"{options.get('mode') or 'default'}/{options.get('backend', 'inductor')}",
        "env/attention": attention,
        "env/grad_accum": cfg.optim.grad_accum,
        "env/num_workers": ds.num_workers if loader else 0,
        "env/pin_memory": ds.pin_memory and loader,
        "env/prefetch_factor": ds.prefetch_factor if loader else None,
        "env/persistent_workers": ds.persistent_workers and ds.num_workers > 0 and loader,
        "env/on_device": ds.on_device,
    }


def needs_dynamic_img_size(cfg: TrialConfig) -> bool:
    """Whether the profilers run the model at a size other than the one it is built for."""
    prof = cfg.profilers
    sizes = [
        *((prof.flops.input_sizes or []) if prof.flops else []),
        *((prof.latency.input_sizes or []) if prof.latency else []),
    ]
    return any(size != cfg.model.img_size for size in sizes)


def _primary(sizes: list[int], img_size: int) -> int:
    return img_size if img_size in sizes else sizes[0]


def _tagged(metrics: dict[str, Any], tag: str) -> dict[str, Any]:
    return {f"{tag}/{k}": v for k, v in metrics.items()} if tag else metrics


@with_own_rng
def static_profile(
    model: nn.Module, cfg: TrialConfig, device: torch.device | str, *, tag: str = ""
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Static profiles of `model` as it stands; returns (flat metrics, {"flops": rows, "latency": rows}).

    `model` is moved to `device` (and to channels_last when the trial asks), as `fit` would. With a
    `tag` every flat key is prefixed `<tag>/` and every row carries the tag, so profiles of the same
    trial before and after a change sit side by side; the untagged keys should describe the model
    the trial reports on (e.g. profile the dense model with tag "dense", the pruned one untagged).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    prof = cfg.profilers
    img = cfg.model.img_size
    precision = trial_precision(cfg, device)
    channels_last = cfg.model.channels_last
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    metrics: dict[str, Any] = {}
    tables: dict[str, list[dict[str, Any]]] = {}

    if prof.params is not None:
        metrics.update(param_metrics(model))

    if prof.flops is not None:
        flat, tables["flops"] = _flops(model, cfg, device, tag)
        metrics.update(flat)
    if prof.latency is not None:
        flat, tables["latency"] = _latency(model, cfg, device, tag)
        metrics.update(flat)
    if prof.memory is not None:
        metrics.update(_inference_memory(model, device, img, precision, channels_last))

    if not tag:
        metrics.update(
            fingerprint(
                device,
                precision=precision,
                channels_last=channels_last,
                compile=cfg.model.compile_options() is not None,
                model=model,
            )
        )
        metrics.update(switch_facts(cfg, model))
    metrics["profile/static_s"] = time.perf_counter() - t0
    return _tagged(metrics, tag), tables


Rows = list[dict[str, Any]]


def _flops(
    model: nn.Module, cfg: TrialConfig, device: torch.device, tag: str
) -> tuple[dict[str, Any], Rows]:
    """FLOPs per input size: the trial's own size as flat keys, every size as rows."""
    prof, img = cfg.profilers.flops, cfg.model.img_size
    assert prof is not None
    sizes = prof.input_sizes or [img]
    rows = flops_rows(
        model,
        sizes,
        device=device,
        train_step=prof.train_step,
        channels_last=cfg.model.channels_last,
    )
    primary = _primary(sizes, img)
    flat = flops_metrics(next(r for r in rows if r["input_size"] == primary))
    return flat, [{"tag": tag, **r} for r in rows]


def _latency(
    model: nn.Module, cfg: TrialConfig, device: torch.device, tag: str
) -> tuple[dict[str, Any], Rows]:
    """Latency per input size x batch size x precision: the trial's own point as flat keys."""
    lat, img = cfg.profilers.latency, cfg.model.img_size
    assert lat is not None
    precision = trial_precision(cfg, device)
    sizes = lat.input_sizes or [img]
    precisions = lat.precisions or [precision]
    timed = model
    options = cfg.model.compile_options()
    if options is not None and not hasattr(model, "_orig_mod"):
        # What fit() will train; the warm-up absorbs the compile.
        timed = torch.compile(model, **options)
    rows = measure_latency(
        timed,
        device,
        input_sizes=sizes,
        batch_sizes=lat.batch_sizes,
        precisions=precisions,
        exclusive=lat.exclusive,
        channels_last=cfg.model.channels_last,
        warmup=lat.warmup,
        repeats=lat.repeats,
        max_point_s=lat.max_point_s,
    )
    flat = latency_metrics(
        rows,
        input_size=_primary(sizes, img),
        precision=precision if precision in precisions else precisions[0],
    )
    flat["latency/exclusive"] = all(r["exclusive"] for r in rows)
    return flat, [{"tag": tag, **r} for r in rows]


def _inference_memory(
    model: nn.Module, device: torch.device, img: int, precision: str, channels_last: bool
) -> dict[str, Any]:
    """Peak memory of batch-1 inference, in a loop of its own (not the timed latency loop)."""
    x = torch.randn(1, 3, img, img, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    try:
        with (
            track_memory(device) as mem,
            torch.inference_mode(),
            autocast_context(device, precision),
        ):
            for _ in range(INFER_MEMORY_FORWARDS):
                model(x)
    finally:
        model.train(was_training)
    return mem.metrics("infer")


def epoch_timer(
    cfg: TrialConfig, device: torch.device, static_metrics: dict[str, Any] | None = None
) -> StepTimer | None:
    """The StepTimer for `train_one_epoch` (None when the time profiler is off)."""
    if cfg.profilers.time is None:
        return None
    gflops = (static_metrics or {}).get("flops/train_step_gflops")
    # MFU needs both: without the FLOPs a peak that would take the matmul probe (0.6 s on a CPU)
    # is not measured; a configured or data-sheet one is still recorded.
    peak, source, reason = peak_flops(
        device,
        trial_precision(cfg, device),
        cfg.profilers.time.peak_tflops,
        measure=gflops is not None,
    )
    if gflops is None:
        reason = "no training-step FLOPs (flops profiler off or its count failed)"
    return StepTimer(
        device,
        flops_per_sample=gflops * 1e9 if gflops is not None else None,
        peak_flops=peak,
        peak_source=source,
        mfu_reason=reason,
        lock=lock_for(device),
    )


@contextmanager
def profiled_region(
    cfg: TrialConfig, device: torch.device, region: str, metrics: dict[str, Any]
) -> Iterator[None]:
    """Peak memory and energy (`energy/<region>_j`; after "eval" the epoch's energy figures) of
    `region` ("train" or "eval") into `metrics`; evaluation holds the device
    shared so another trial's latency window never overlaps it (training steps hold it through
    the StepTimer)."""
    hold = lock_for(device).in_use() if region == "eval" else nullcontext()
    meter = meter_for(device)
    before = meter.reading()
    if cfg.profilers.memory is None:
        with hold:
            yield
    else:
        with hold, track_memory(device) as mem:
            yield
        metrics.update(mem.metrics(region))
    # Energy of the region from the device's counter (null where none is readable).
    metrics[f"energy/{region}_j"] = meter.joules_since(before)
    if region == "eval":
        metrics.update(epoch_energy(metrics))
