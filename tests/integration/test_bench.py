"""The `bench` trainable: inference rows in `latency`, training rows in `train_bench` whose parts
add up to the step, OOM as a data point, the LoRA model as the lora trainable trains it, --smoke
shrinking it, and its rows through the Parquet sink."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from orchestrator.driver.schema import validate_sweep_dict
from orchestrator.driver.single_trial import run_single
from orchestrator.driver.smoke import apply_smoke
from profilers.metric_registry import table_types
from trainables import bench
from trainables.loop.reporting import ListReporter

TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "kwargs": {"depth": 1, "patch_size": 8, "embed_dim": 32, "num_heads": 2},
}


@pytest.fixture(autouse=True)
def _own_device_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Bench points take the device's exclusive window: other processes on this machine (another
    # test run) must not make these tests wait for it.
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path / "locks"))


def _config(model: dict[str, Any], **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "trainable": "bench",
        "model": model,
        "dataset": {"name": "synthetic", "num_classes": 5},
        "precision": "fp32",
        "device": "cpu",
        "bench": {"batch_sizes": [2, 4], "warmup": 1, "steps": 4},
        "profilers": {"latency": {"warmup": 1, "repeats": 3}, "flops": {"train_step": False}},
    }
    cfg.update(over)
    return cfg


def _run(config: dict[str, Any]) -> ListReporter:
    reporter = ListReporter()
    bench.run(config, reporter)
    return reporter


@pytest.mark.parametrize(
    "model", [TINY_VIT, {"name": "test_resnet", "img_size": 32}], ids=["vit", "resnet"]
)
def test_bench_times_inference_and_training_per_batch_size(model: dict[str, Any]) -> None:
    cfg = _config(
        model, bench={"batch_sizes": [2, 4], "warmup": 1, "steps": 4, "max_point_s": None}
    )
    r = _run(cfg)
    # One epoch-like report: the trial gets a `trials` row with its facts, and no training epoch.
    assert r.reports == [{"epoch": 0}]
    assert r.facts["params/total"] > 0 and r.facts["flops/fwd_gflops"] > 0
    assert r.facts["env/torch_version"] == torch.__version__

    train = r.tables["train_bench"]
    assert [row["batch_size"] for row in train] == [2, 4]
    assert set(table_types("train_bench")) >= set(train[0])  # every column declared
    for row in train:
        assert row["status"] == "ok", row["error"]
        assert row["steps"] == 4 and row["warmup"] == 1 and row["timer"] == "perf_counter"
        parts = row["forward_ms_mean"] + row["backward_ms_mean"] + row["optimizer_ms_mean"]
        assert parts == pytest.approx(row["step_ms_mean"], rel=1e-9)
        assert min(row["forward_ms_p50"], row["backward_ms_p50"], row["optimizer_ms_p50"]) > 0
        assert row["samples_per_s"] == pytest.approx(
            row["batch_size"] * 1000.0 / row["step_ms_mean"], rel=1e-9
        )
        assert row["cpu_peak_rss_mb"] > 0 and row["gpu_peak_allocated_mb"] is None

    infer = r.tables["latency"]
    assert [(row["batch_size"], row["precision"]) for row in infer] == [(2, "fp32"), (4, "fp32")]
    assert all(row["status"] == "ok" and row["repeats"] == 3 for row in infer)
    assert all(row["cpu_peak_rss_mb"] > 0 and row["requested_batch_size"] for row in infer)

    # The trial's summary is the largest batch that ran.
    assert r.facts["bench/train_batch_size"] == 4
    assert r.facts["bench/train_step_ms"] == train[1]["step_ms_p50"]
    assert r.facts["bench/infer_samples_per_s"] == infer[1]["throughput_samples_per_s"]
    assert r.facts["bench/infer_ms_per_sample"] == pytest.approx(infer[1]["latency_ms_p50"] / 4)
    assert r.facts["bench/oom_points"] == 0


def test_batch_sizes_default_to_the_latency_profilers_and_modes_choose_tables() -> None:
    cfg = _config(TINY_VIT, bench={"modes": ["training"], "steps": 3, "warmup": 0})
    cfg["profilers"]["latency"]["batch_sizes"] = [3]
    r = _run(cfg)
    assert "latency" not in r.tables
    assert [row["batch_size"] for row in r.tables["train_bench"]] == [3]
    assert r.facts["bench/infer_batch_size"] is None  # nothing measured: None, never 0


def _oom_above(limit: int) -> Any:
    def hook(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if args[0].shape[0] > limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (simulated above batch {limit})")

    return hook


def test_out_of_memory_is_a_row_and_auto_batch_size_steps_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = bench.bench_model

    def bench_model(cfg: Any, classes: int) -> Any:
        model, facts, base = made(cfg, classes)
        model.register_forward_pre_hook(_oom_above(2))
        return model, facts, base

    monkeypatch.setattr(bench, "bench_model", bench_model)
    cfg = _config(TINY_VIT, bench={"batch_sizes": [2, 8], "warmup": 0, "steps": 3})
    r = _run(cfg)
    for table in ("latency", "train_bench"):
        rows = r.tables[table]
        assert [(row["batch_size"], row["status"]) for row in rows] == [(2, "ok"), (8, "oom")]
        assert "simulated" in rows[1]["error"]
    assert r.facts["bench/oom_points"] == 2
    assert r.facts["bench/train_batch_size"] == 2

    cfg["optim"] = {"auto_batch_size": True}
    r = _run(cfg)
    for table in ("latency", "train_bench"):
        rows = r.tables[table]
        # 8 runs out of memory, 4 too, 2 fits: the row says what was asked and what ran.
        assert [(row["requested_batch_size"], row["batch_size"]) for row in rows] == [
            (2, 2),
            (8, 2),
        ]
        assert all(row["status"] == "ok" for row in rows)


def test_lora_model_as_the_lora_trainable_trains_it() -> None:
    cfg = _config(
        {**TINY_VIT, "kwargs": {**TINY_VIT["kwargs"], "depth": 2}},
        bench={"model_as": "lora", "batch_sizes": [2], "warmup": 0, "steps": 3},
        lora={"rank": 4, "target_modules": ["qkv"]},
    )
    r = _run(cfg)
    assert r.facts["lora/adapted_modules"] == 2
    assert 0 < r.facts["params/trainable"] < r.facts["params/total"]
    assert r.tables["train_bench"][0]["status"] == "ok"


def test_smoke_shrinks_the_bench() -> None:
    sweep = validate_sweep_dict(
        _config(
            TINY_VIT,
            bench={"batch_sizes": [8, 2, 32], "precisions": ["fp32", "bf16"], "steps": 50},
        )
    )
    smoked = apply_smoke(sweep).bench
    assert smoked.batch_sizes == [2] and smoked.precisions == ["fp32"]
    assert smoked.steps == 3 and smoked.warmup == 1 and smoked.max_point_s == 2.0
    assert apply_smoke(apply_smoke(sweep)).bench == smoked


def test_bench_rows_reach_parquet_through_the_sinks(tmp_path: Path, mlflow_uri: str) -> None:
    cfg = _config(TINY_VIT, bench={"batch_sizes": [1, 2], "warmup": 1, "steps": 3})
    sweep = validate_sweep_dict({"name": "tiny_bench", **cfg, "resources": {"cpu": 1}})
    trial, _ = run_single(sweep, index=0, output=tmp_path, sweep_text="")
    assert trial.status == "TERMINATED", trial.error
    trials = pd.read_parquet(tmp_path / "trials")
    assert trials.loc[0, "trainable"] == "bench" and trials.loc[0, "epochs_completed"] == 0
    assert trials.loc[0, "bench/train_batch_size"] == 2
    tb = pd.read_parquet(tmp_path / "train_bench")
    assert list(tb["batch_size"]) == [1, 2] and set(tb["status"]) == {"ok"}
    # Means add up by construction; medians need not (another process may preempt any part of
    # any step on a shared machine), but none can exceed the median step.
    parts = tb["forward_ms_mean"] + tb["backward_ms_mean"] + tb["optimizer_ms_mean"]
    assert ((parts / tb["step_ms_mean"]) - 1).abs().max() < 1e-9
    for part in ("forward", "backward", "optimizer"):
        assert (tb[f"{part}_ms_p50"] <= tb["step_ms_p50"]).all()
    assert len(pd.read_parquet(tmp_path / "latency")) == 2


@pytest.mark.slow
def test_lora_ranks_bench_stage_runs_as_smoke(tmp_path: Path, mlflow_uri: str) -> None:
    from orchestrator.cli import main

    out = tmp_path / "out"
    args = ["sweeps/lora_ranks.yaml", "--stage", "bench", "--index", "2", "--smoke"]
    assert main(["trial", *args, "--output", str(out)]) == 0
    trials = pd.read_parquet(out / "trials")
    assert trials.loc[0, "stage"] == "bench" and trials.loc[0, "lora.rank"] == 8
    assert trials.loc[0, "params/trainable_pct"] < 5
    tb = pd.read_parquet(out / "train_bench")
    assert list(tb["batch_size"]) == [1] and tb.loc[0, "status"] == "ok"
    assert tb.loc[0, "input_size"] == 224 and tb.loc[0, "precision"] == "fp32"
