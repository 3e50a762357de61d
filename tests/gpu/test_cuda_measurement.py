"""On a CUDA device: timing with CUDA events, allocated vs reserved memory, an out-of-memory as
data (auto_batch_size), and FLOPs of fused attention (SDPA) counted like the plain path."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from profilers.flops import count_flops
from profilers.latency import measure_latency
from profilers.memory import track_memory
from tests.gpu.helpers import TINY_VIT, small_cnn, tiny_vit
from trainables import bench
from trainables.config import TrialConfig
from trainables.loop.auto_batch import fit_batch_size, kept_state, oom_facts, training_step_probe
from trainables.loop.profiling import epoch_timer, static_profile
from trainables.loop.reporting import ListReporter

pytestmark = pytest.mark.gpu


def test_cuda_latency_rows_use_events() -> None:
    rows = measure_latency(
        small_cnn().cuda(),
        "cuda",
        input_sizes=[32],
        batch_sizes=[1, 8],
        precisions=["fp32", "fp16"],
        warmup=2,
        repeats=5,
    )
    assert len(rows) == 4
    assert all(r["timer"] == "cuda_events" and r["status"] == "ok" for r in rows)
    assert all(r["latency_ms_p50"] > 0 for r in rows)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bench_on_cuda_uses_events_and_counts_gpu_memory(precision: str) -> None:
    reporter = ListReporter()
    bench.run(
        {
            "trainable": "bench",
            "model": TINY_VIT,
            "dataset": {"name": "synthetic", "num_classes": 5},
            "precision": "fp32",
            "device": "cuda",
            "bench": {"batch_sizes": [2, 4], "warmup": 1, "steps": 5, "precisions": [precision]},
            "profilers": {"latency": {"warmup": 1, "repeats": 3}, "flops": {"train_step": False}},
        },
        reporter,
    )
    for table in ("latency", "train_bench"):
        assert reporter.tables[table], table
        for row in reporter.tables[table]:
            assert row["status"] == "ok", row["error"]
            assert row["timer"] == "cuda_events" and row["precision"] == precision
            assert row["gpu_peak_allocated_mb"] > 0
    for row in reporter.tables["train_bench"]:
        parts = row["forward_ms_mean"] + row["backward_ms_mean"] + row["optimizer_ms_mean"]
        assert parts == pytest.approx(row["step_ms_mean"], rel=1e-6)


def test_static_profile_on_a_gpu_gives_memory_numbers_and_event_latency() -> None:
    c = TrialConfig.model_validate(
        {
            "model": {"name": "vit", "img_size": 32},
            "profilers": {
                "latency": {
                    "batch_sizes": [1, 2],
                    "warmup": 0,
                    "repeats": 3,
                    "precisions": ["fp32", "bf16"],
                },
            },
        }
    )
    metrics, tables = static_profile(tiny_vit(), c, torch.device("cuda"))
    assert metrics["mem/infer_gpu_peak_allocated_mb"] > 0
    assert metrics["mem/infer_gpu_peak_reserved_mb"] >= metrics["mem/infer_gpu_peak_allocated_mb"]
    assert "mem/null_reason" not in metrics
    assert all(r["timer"] == "cuda_events" and r["status"] == "ok" for r in tables["latency"])
    assert metrics["env/device_name"] == torch.cuda.get_device_name()
    # the CUDA attention kernels have torch formulas: both counters see attention
    assert metrics["flops/crosscheck_ratio"] == pytest.approx(1, abs=0.02)
    timer = epoch_timer(c, torch.device("cuda"), metrics)
    assert timer.flops_per_sample == metrics["flops/train_step_gflops"] * 1e9


def test_gpu_peaks_are_allocated_below_reserved_and_reset() -> None:
    with track_memory("cuda") as big:
        x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    with track_memory("cuda") as small:
        y = torch.empty(2**20, dtype=torch.uint8, device="cuda")
        del y
    b, s = big.metrics("train"), small.metrics("eval")
    assert b["mem/gpu_peak_allocated_mb"] >= 256
    assert s["mem/eval_gpu_peak_allocated_mb"] < 16  # the peak was reset between regions
    assert b["mem/gpu_peak_reserved_mb"] >= b["mem/gpu_peak_allocated_mb"]
    assert "mem/null_reason" not in b


def test_a_real_cuda_oom_steps_the_batch_down_and_is_measured() -> None:
    """On a device capped at 2 GiB, a batch of 1024 224-px images cannot train; a smaller one can."""
    device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2 * 2**30 / total), device)
    try:
        model = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(64, 10),
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters())
        step = training_step_probe(
            model,
            optimizer,
            nn.CrossEntropyLoss(),
            device=device,
            img_size=224,
            num_classes=10,
            autocast=lambda: torch.autocast("cuda", enabled=False),
            backward=lambda loss: loss.backward(),
        )
        seen: dict[str, Any] = {}

        def measured(batch_size: int) -> None:
            try:
                step(batch_size)
            except torch.OutOfMemoryError:
                seen.setdefault("facts", oom_facts(device, batch_size, "probe"))
                raise

        with kept_state(model, optimizer):
            size, too_big = fit_batch_size(measured, 1024, device=device)
        assert 1 <= size < 1024 and too_big and too_big[0] == 1024
        facts = seen["facts"]
        assert facts["oom/batch_size"] == 1024 and facts["oom/gpu_total_mb"] > 0
        assert facts["oom/gpu_reserved_mb"] is not None and facts["oom/null_reason"] is None
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def test_bench_oom_is_a_row_and_auto_batch_size_steps_down_on_cuda() -> None:
    """A real OOM in the bench (memory capped at 1 GiB) is an `oom` row or a smaller batch that ran."""
    device = torch.device("cuda", torch.cuda.current_device())
    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 2**30 / total), device)
    try:
        reporter = ListReporter()
        bench.run(
            {
                "trainable": "bench",
                "model": {"name": "resnet18", "img_size": 224},
                "dataset": {"name": "synthetic", "num_classes": 10},
                "precision": "fp32",
                "device": "cuda",
                "optim": {"auto_batch_size": True},
                "bench": {"batch_sizes": [4096], "modes": ["training"], "warmup": 1, "steps": 3},
                "profilers": {"latency": {"warmup": 1, "repeats": 3}, "flops": False},
            },
            reporter,
        )
        (row,) = reporter.tables["train_bench"]
        assert row["requested_batch_size"] == 4096
        assert row["status"] == "ok", row["error"]
        assert row["batch_size"] < 4096 and row["samples_per_s"] > 0
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def test_fused_attention_flops_are_counted_like_the_plain_path() -> None:
    """SDPA's CUDA kernels (flash / memory-efficient) are counted: a fused ViT costs what the
    plain matmul-softmax ViT costs, forward and training step, by both counters."""
    torch.manual_seed(0)
    fused = tiny_vit().cuda()
    plain = tiny_vit().cuda()
    for block in plain.blocks:
        block.attn.fused_attn = False
    for block in fused.blocks:
        block.attn.fused_attn = True
    f = count_flops(fused, 32, device="cuda")
    p = count_flops(plain, 32, device="cuda")
    assert f["status"] == "ok" and p["status"] == "ok", (f["error"], p["error"])
    assert f["fwd_gflops"] == pytest.approx(p["fwd_gflops"], rel=0.02)
    assert f["train_step_gflops"] == pytest.approx(p["train_step_gflops"], rel=0.05)
    assert f["crosscheck_ratio"] == pytest.approx(1, abs=0.02)
