"""`compare` on real runs of one one-trial sweep (`orchestrator trial`, no Ray): four runs of
the same sweep against four more are within noise on time metrics; a quarter of the batch size
flags the throughput, one run against one.

Why several runs a side: the epochs here last ~25 ms, and a fresh process of the same trial runs
them up to ~40% slower or faster (docs/report.md, "One run per side") while each run's own epochs
vary by ~3%; one run a side cannot see that, so the identical-runs verdict needs repeats. A
quarter of the batch size (throughput x0.3-0.4) is past both bands; the one-run band is the
median and scaled MAD of the epochs after the first, so one stalled epoch does not hide it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.cli import main
from tests.integration.test_single_trial import _run_hidden

pytestmark = pytest.mark.slow

SWEEP = """
name: cmp_real
trainable: train
model: {{name: vit_tiny_patch16_224, img_size: 16, kwargs: {{depth: 1, patch_size: 8, embed_dim: 32, num_heads: 2}}}}
dataset: {{name: digits, subset: 512}}
optim: {{batch_size: {bs}, epochs: 5}}
precision: fp32
checkpoint: {{enabled: false}}
profilers: {{latency: {{batch_sizes: [1], repeats: 20, warmup: 3}}}}
resources: {{cpu: 1}}
"""
REPEATS = 4  # runs a side: 3 a side still mistook two runs for a change 1 time in 40


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp_real")
    outs = {name: root / name for name in ("a", "again", "quarter")}
    for name, bs in (("a", 64), ("quarter", 16)):
        (root / f"{name}.yaml").write_text(SWEEP.format(bs=bs), encoding="utf-8")
    # Interleaved, so that a slow minute of the machine falls on both sides.
    plan = [*[(side, r) for r in range(REPEATS) for side in ("a", "again")], ("quarter", 0)]
    for side, r in plan:
        sweep = root / ("quarter.yaml" if side == "quarter" else "a.yaml")
        out = str(outs[side] / f"run{r}")  # a folder of outputs: compare pools their trials
        _run_hidden("ray,mlflow", "trial", str(sweep), "--output", out, locks=root)
    return outs


def _compare(a: Path, b: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple:
    code = main(["compare", str(a), str(b), "--json", *extra])
    return code, json.loads(capsys.readouterr().out)


def test_two_runs_of_one_sweep_are_within_noise(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = _compare(runs["a"], runs["again"], capsys, "--fail-on", "regression")
    times = [r for r in report["rows"] if r["metric"].startswith(("time/", "latency"))]
    assert {r["metric"] for r in times} >= {"time/epoch_s", "time/samples_per_s"}
    assert {r["verdict"] for r in times} == {"within noise"}, times
    assert code == 0
    epoch = next(r for r in times if r["metric"] == "time/epoch_s")
    assert epoch["noise_from"] == "seeds" and (epoch["n_a"], epoch["n_b"]) == (REPEATS, REPEATS)
    assert report["caveats"] == []  # every time figure has repeats


def test_a_quarter_of_the_batch_size_flags_the_throughput(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one = runs["a"] / "run0"
    _, report = _compare(one, runs["quarter"], capsys, "--metric", "samples_per_s")
    (row,) = report["rows"]  # matched although the batch size differs: it was not searched
    assert row["noise_from"] == "epochs after the first" and row["n_a"] == 4
    assert row["verdict"] == "regression", row  # a quarter of the batch: fewer samples/s
    assert row["change"] < 1 - max(0.05, row["noise"])
    (note,) = report["caveats"]  # one run each: the verdict says what it cannot see
    assert "one run per side" in note and "1 flagged" in note
