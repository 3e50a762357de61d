"""Latency rows: statistics that hang together, sizes through dynamic image size, failures as rows."""

from __future__ import annotations

import gc
import time

import pytest
import timm
import torch
from torch import nn

from profilers.latency import NOISY_CV, latency_metrics, measure_latency, summarize, time_forward


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path / "locks"))


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def test_summary_by_hand() -> None:
    s = summarize([1.0, 2.0, 3.0, 4.0], batch_size=2)
    assert s["latency_ms_p50"] == 2.5
    assert s["latency_ms_min"] == 1.0
    assert s["latency_ms_mean"] == 2.5
    assert s["per_sample_ms_p50"] == 1.25
    assert s["throughput_samples_per_s"] == 2 * 4 / 0.010
    assert abs(s["latency_ms_p99"] - 3.97) < 1e-9
    # cv = sample stdev / mean = 1.29099 / 2.5
    assert abs(s["cv"] - 0.5163977794943222) < 1e-9 and s["noisy"] is True


def test_a_steady_point_is_not_noisy_and_a_jumpy_one_is() -> None:
    steady = summarize([10.0, 10.1, 9.9, 10.0], batch_size=1)
    assert steady["cv"] < NOISY_CV and steady["noisy"] is False
    # One forward in four took twice as long (a neighbour took the core): flagged.
    jumpy = summarize([10.0, 10.0, 10.0, 20.0], batch_size=1)
    assert jumpy["cv"] > NOISY_CV and jumpy["noisy"] is True


class _Slow(nn.Module):
    """A forward that sleeps half its time: off the CPU, as a thread waiting for a core is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 0.005:
            pass
        time.sleep(0.005)
        return x


def test_cpu_share_tells_waiting_from_running() -> None:
    x = torch.zeros(1)
    busy = time_forward(nn.Identity(), x, warmup=0, repeats=20)
    assert busy.cpu_share is not None and busy.cpu_share > 0.5
    half = time_forward(_Slow(), x, warmup=0, repeats=10)
    assert half.cpu_share is not None and 0.2 < half.cpu_share < 0.8


def test_the_collector_is_off_while_timing_and_restored_after() -> None:
    seen: list[bool] = []

    class Probe(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(gc.isenabled())
            return x

    assert gc.isenabled()
    time_forward(Probe(), torch.zeros(1), warmup=2, repeats=3)
    assert seen == [True, True, False, False, False]
    assert gc.isenabled()


def test_rows_per_point_and_their_relations() -> None:
    model = small_cnn().train()
    rows = measure_latency(
        model, "cpu", input_sizes=[16, 32], batch_sizes=[1, 4], warmup=1, repeats=5
    )
    assert model.training, "the model's mode is restored"
    assert [(r["input_size"], r["batch_size"]) for r in rows] == [
        (16, 1),
        (16, 4),
        (32, 1),
        (32, 4),
    ]
    for r in rows:
        assert r["status"] == "ok" and r["repeats"] == 5 and r["timer"] == "perf_counter"
        assert (
            r["latency_ms_min"] <= r["latency_ms_p50"] <= r["latency_ms_p90"] <= r["latency_ms_p99"]
        )
        # throughput comes from the same forwards: never more than the fastest forward allows,
        # exactly what the mean forward allows
        assert r["throughput_samples_per_s"] <= r["batch_size"] * 1000 / r["latency_ms_min"] + 1e-6
        expect = r["batch_size"] * 1000 / r["latency_ms_mean"]
        assert abs(r["throughput_samples_per_s"] / expect - 1) < 1e-9
        assert r["exclusive"] is True and r["lock_wait_s"] >= 0
        assert r["cv"] == r["latency_ms_stdev"] / r["latency_ms_mean"]
        assert r["noisy"] == (r["cv"] > NOISY_CV)
        assert 0 < r["cpu_share"] <= 1
    b1 = rows[0]
    assert b1["per_sample_ms_p50"] == b1["latency_ms_p50"]
    flat = latency_metrics(rows, input_size=32, precision="fp32")
    assert flat["latency/b1_ms_p50"] == rows[2]["latency_ms_p50"]
    assert flat["latency/b1_cv"] == rows[2]["cv"] and flat["latency/b1_noisy"] == rows[2]["noisy"]
    assert flat["latency/max_samples_per_s"] == max(r["throughput_samples_per_s"] for r in rows[2:])


def test_vit_built_with_dynamic_img_size_runs_other_sizes() -> None:
    """timm's dynamic_img_size resamples the position embedding per forward; weights untouched."""
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        dynamic_img_size=True,
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = measure_latency(
        model,
        "cpu",
        input_sizes=[32, 64, 36],
        batch_sizes=[1],
        warmup=0,
        repeats=3,
        exclusive=False,
    )
    assert [r["status"] for r in rows] == ["ok", "ok", "error"]  # 36 is not a multiple of 8
    assert rows[2]["latency_ms_p50"] is None and rows[2]["error"]
    assert all(r["exclusive"] is False for r in rows)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_vit_built_for_one_size_gives_error_rows_at_others() -> None:
    model = timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
    )
    rows = measure_latency(
        model, "cpu", input_sizes=[32, 64], batch_sizes=[1], warmup=0, repeats=3, exclusive=False
    )
    assert [r["status"] for r in rows] == ["ok", "error"]
    assert rows[1]["latency_ms_p50"] is None and "64" in rows[1]["error"]


def test_budget_stops_repeats_but_keeps_three() -> None:
    rows = measure_latency(
        small_cnn(),
        "cpu",
        input_sizes=[16],
        batch_sizes=[1],
        warmup=0,
        repeats=1000,
        max_point_s=1e-9,
    )
    assert rows[0]["repeats"] == 3
