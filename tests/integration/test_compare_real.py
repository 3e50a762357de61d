"""`compare` on real runs of one one-trial sweep (`orchestrator trial`, no Ray): two runs of the
same sweep are within noise on time metrics; a quarter of the batch size flags the throughput.

The epochs here last ~20 ms, so one epoch's time varies by ~8% and compare's band for a
single repeat is ~35%: halving the batch (throughput x0.6-0.7 at this size) sits on that edge;
a quarter (x0.3-0.4) is well past it."""

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


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp_real")
    outs = {}
    for name, bs in (("a", 64), ("again", 64), ("quarter", 16)):
        sweep = root / f"{name}.yaml"
        sweep.write_text(SWEEP.format(bs=bs), encoding="utf-8")
        outs[name] = root / name
        _run_hidden("ray,mlflow", "trial", str(sweep), "--output", str(outs[name]), locks=root)
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
    assert epoch["noise_from"] == "epochs after the first" and epoch["n_a"] == 4


def test_a_quarter_of_the_batch_size_flags_the_throughput(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, report = _compare(runs["a"], runs["quarter"], capsys, "--metric", "samples_per_s")
    (row,) = report["rows"]  # matched although the batch size differs: it was not searched
    assert row["verdict"] in ("regression", "improvement"), row
    assert abs(row["change"] - 1) > max(0.05, row["noise"] or 0)
