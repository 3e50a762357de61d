"""static_profile: the `profilers:` section turned into flat keys and table rows, all registered."""

from __future__ import annotations

import pytest
import timm
import torch

from profilers.metric_registry import metric_type, registered, registered_tables
from trainables.config import TrialConfig
from trainables.loop.profiling import epoch_timer, profiled_region, static_profile
from trainables.registry import load_metric_declarations

CPU = torch.device("cpu")
FAST_LATENCY = {"batch_sizes": [1, 2], "warmup": 0, "repeats": 3}


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path / "locks"))


def tiny_vit(*, dynamic: bool = False) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=32,
        dynamic_img_size=dynamic,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )


def cfg(**profilers: object) -> TrialConfig:
    return TrialConfig.model_validate(
        {"model": {"name": "vit", "img_size": 32}, "profilers": profilers}
    )


def test_every_key_and_column_is_registered_and_typed() -> None:
    load_metric_declarations()
    c = cfg(latency={**FAST_LATENCY, "input_sizes": [32, 64]}, flops={"input_sizes": [32, 64]})
    # Other sizes than the built one: the model is built with timm's dynamic_img_size.
    metrics, tables = static_profile(tiny_vit(dynamic=True), c, CPU)
    unregistered = [k for k in metrics if metric_type(k) is None]
    assert not unregistered, unregistered
    py = {"float64": (float, int), "int64": (int,), "string": (str,), "bool": (bool,)}
    for k, v in metrics.items():
        assert v is None or isinstance(v, py[metric_type(k)]), (k, v)
    assert len(tables["latency"]) == 4 and len(tables["flops"]) == 2
    for name, rows in tables.items():
        # The profilers' own columns; the bench trainable adds its memory columns to `latency`.
        columns = registered_tables()[name].items()
        own = {c for c, spec in columns if spec.module.startswith("profilers.")}
        for row in rows:
            assert set(row) == own, set(row) ^ own
    # the flat figures are the trial's own size, and the table has the others
    assert metrics["flops/input_size"] == 32
    assert metrics["flops/fwd_gmacs"] == tables["flops"][0]["fwd_gmacs"]
    assert tables["flops"][1]["fwd_gmacs"] > 4 * tables["flops"][0]["fwd_gmacs"]
    assert metrics["flops/fwd_gflops"] / metrics["flops/fwd_gmacs"] == pytest.approx(2, abs=0.1)
    assert metrics["latency/b1_ms_p50"] == tables["latency"][0]["latency_ms_p50"]
    # on a CPU: memory fields null with a reason, never 0; the fingerprint is there
    for k in registered():
        if k.startswith("mem/") and "gpu_peak" in k and k in metrics:
            assert metrics[k] is None
    assert metrics["mem/infer_gpu_peak_allocated_mb"] is None and metrics["mem/null_reason"]
    assert metrics["mem/infer_cpu_peak_rss_mb"] > 0
    assert metrics["env/torch_version"] == torch.__version__
    assert metrics["env/precision"] == "fp32" and metrics["env/fused_attn"] == "1/1"
    assert metrics["latency/exclusive"] is True


def test_a_size_the_model_was_not_built_for_is_an_error_row() -> None:
    """Without dynamic_img_size a timm ViT refuses other sizes: a row with its reason, not 0."""
    c = cfg(latency=False, flops={"input_sizes": [32, 64], "train_step": False})
    _, tables = static_profile(tiny_vit(dynamic=False), c, CPU)
    ok, bad = tables["flops"]
    assert ok["status"] == "ok" and ok["fwd_gmacs"] > 0
    assert bad["status"] == "error" and bad["fwd_gmacs"] is None and "64" in bad["error"]


def test_switched_off_profilers_report_nothing() -> None:
    c = cfg(latency=False, flops=None, memory=False, params=False)
    metrics, tables = static_profile(tiny_vit(), c, CPU)
    assert tables == {}
    assert not [k for k in metrics if k.split("/")[0] in ("flops", "latency", "mem", "params")]
    assert "env/torch_version" in metrics


def test_tag_prefixes_keys_and_marks_rows() -> None:
    c = cfg(latency={**FAST_LATENCY, "batch_sizes": [1]}, flops={"train_step": False})
    metrics, tables = static_profile(tiny_vit(), c, CPU, tag="dense")
    assert metrics["dense/params/total"] > 0 and "params/total" not in metrics
    assert not [k for k in metrics if k.startswith("env/")]
    assert all(r["tag"] == "dense" for rows in tables.values() for r in rows)
    assert metric_type("dense/flops/fwd_gmacs") == "float64"


def test_epoch_timer_carries_the_counted_flops() -> None:
    c = cfg(time={"peak_tflops": 1.0})
    timer = epoch_timer(c, CPU, {"flops/train_step_gflops": 0.5})
    assert timer.flops_per_sample == 0.5e9 and timer.peak_flops == 1e12
    assert timer.lock is not None
    # No data-sheet peak for a CPU: measured by a matmul probe instead (test_switches.py).
    measured = epoch_timer(cfg(), CPU, {"flops/train_step_gflops": 0.5})
    assert measured.peak_flops > 0 and measured.peak_source == "measured"
    assert epoch_timer(cfg(time=False), CPU, {}) is None


def test_profiled_region_fills_metrics_only_when_on() -> None:
    metrics: dict = {}
    with profiled_region(cfg(), CPU, "eval", metrics):
        pass
    assert (
        metrics["mem/eval_cpu_peak_rss_mb"] > 0
        and metrics["mem/eval_gpu_peak_allocated_mb"] is None
    )
    off: dict = {}
    with profiled_region(cfg(memory=False), CPU, "train", off):
        pass
    # Memory off: no mem/* keys at all (energy, always read, says for itself why it is null).
    assert not [k for k in off if k.startswith("mem/")], off
