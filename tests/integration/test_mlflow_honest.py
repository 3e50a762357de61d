"""MLflow tells trials apart and says what their numbers are worth: child runs named by their
searched values, `best/*` at trial end, caveats as a tag, the sweep's best on the parent run.
One smoke trial through `python -m orchestrator trial` (no Ray)."""

from __future__ import annotations

from pathlib import Path

from orchestrator import cli
from tests.process_helpers import mlflow_runs

SWEEP = """
name: honest
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 64}
optim: {batch_size: 32, epochs: 1, max_val_batches: 1}
precision: fp32
device: cpu
profilers: {latency: false, flops: false}
search: {optim.lr: {grid: [1.0e-3]}}
"""


def test_run_names_best_values_and_caveats(tmp_path: Path) -> None:
    sweep = tmp_path / "honest.yaml"
    sweep.write_text(SWEEP)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = cli.main(
        ["trial", str(sweep), "--smoke", "--output", str(tmp_path / "out"), "--tracking-uri", uri]
    )
    assert code == 0
    runs = mlflow_runs(uri, "honest")
    child = next(r for r in runs if r.data.tags["lvmbench.role"] == "trial")
    parent = next(r for r in runs if r.data.tags["lvmbench.role"] == "sweep")
    assert child.info.run_name == "resnet10t lr=0.001"
    assert "best/val/acc" in child.data.metrics and "best/epoch" in child.data.metrics
    assert "substituted" in child.data.tags["lvmbench.caveats"]  # --smoke: a tiny subset
    assert parent.data.metrics["best/val/acc"] == child.data.metrics["best/val/acc"]
    assert parent.data.tags["lvmbench.best_trial_id"] == child.data.tags["lvmbench.trial_id"]
