"""End to end through Ray Tune: a sweep file -> trials -> Parquet tables + MLflow parent/child runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from orchestrator.cli import main

SWEEP = """
name: e2e
trainable: train
dataset: {name: digits, subset: 256}
optim: {lr: 2.0e-3, batch_size: 32, epochs: 2}
precision: fp32
search:
  model:
    grid:
      - {name: resnet10t, img_size: 16}
      - {name: vit_tiny_patch16_224, img_size: 16, kwargs: {patch_size: 8, depth: 1}}
profilers:
  latency: {input_sizes: [16], batch_sizes: [1], warmup: 1, repeats: 3}
  flops: {train_step: false}
resources: {cpu: 1}
checkpoint: {enabled: false}
"""

EPOCH_COLUMNS = [
    "sweep",
    "trial_id",
    "epoch",
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/f1_macro",
    "time/epoch_s",
    "time/samples_per_s",
]


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, int]:
    tmp = tmp_path_factory.mktemp("e2e")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sweep = tmp / "e2e.yaml"
    sweep.write_text(SWEEP)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    try:
        code = main([str(sweep), "--output", str(tmp / "out"), "--quiet"])
    finally:
        mp.undo()
    return tmp / "out", uri, code


def test_two_trial_sweep_writes_epochs_and_trials(sweep_run: tuple[Path, str, int]) -> None:
    out, _, code = sweep_run
    assert code == 0
    epochs = pd.read_parquet(out / "epochs")
    trials = pd.read_parquet(out / "trials")
    assert set(EPOCH_COLUMNS) <= set(epochs.columns)
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    assert sorted(epochs.groupby("trial_id").size().tolist()) == [2, 2]
    assert not epochs.duplicated(["trial_id", "epoch"]).any()
    assert set(epochs["model.name"]) == {"resnet10t", "vit_tiny_patch16_224"}
    assert (trials["best/val/acc"] >= trials["val/acc"]).all()
    assert pd.read_parquet(out / "latency")["trial_id"].nunique() == 2


def test_mlflow_has_parent_and_a_child_per_trial(sweep_run: tuple[Path, str, int]) -> None:
    _, uri, _ = sweep_run
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["e2e"])
    parents = runs[runs["tags.lvmbench.role"] == "sweep"]
    children = runs[runs["tags.lvmbench.role"] == "trial"]
    assert len(parents) == 1 and len(children) == 2
    assert (children["tags.mlflow.parentRunId"] == parents["run_id"].iloc[0]).all()
    assert children["metrics.val/acc"].notna().all()
    client = mlflow.MlflowClient(uri)
    history = client.get_metric_history(children["run_id"].iloc[0], "val/acc")
    assert sorted(m.step for m in history) == [1, 2]
    assert children["params.model.name"].notna().all()
    # Text results (the environment fingerprint) become tags; tables become CSV artifacts.
    assert children["tags.env/torch_version"].notna().all()
    artifacts = {a.path for a in client.list_artifacts(children["run_id"].iloc[0])}
    assert {"latency.csv"} <= artifacts
    assert "sweep.yaml" in {a.path for a in client.list_artifacts(parents["run_id"].iloc[0])}


# The first trial fails (CIFAR-10 is not on disk and may not be downloaded); one trial at a time,
# so the digits trial starts only after that failure: the sweep must go on to it and finish it.
FAIL_SWEEP = """
name: e2e_fail
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 128, root: NOTHING, download: false}
optim: {lr: 2.0e-3, batch_size: 32, epochs: 1}
precision: fp32
search:
  dataset.name: {grid: [cifar10, digits]}
profilers: {latency: false, flops: false}
resources: {cpu: 1}
max_concurrent_trials: 1
checkpoint: {enabled: false}
"""


def test_failed_trial_is_recorded_and_the_sweep_goes_on(
    tmp_path: Path, mlflow_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "fail.yaml"
    sweep.write_text(FAIL_SWEEP.replace("NOTHING", str(tmp_path / "nothing")))
    out = tmp_path / "out"
    assert main([str(sweep), "--output", str(out), "--quiet"]) == 1
    trials = pd.read_parquet(out / "trials").set_index("dataset.name")
    assert sorted(trials.index) == ["cifar10", "digits"]
    assert trials.loc["cifar10", "status"] == "ERROR"
    assert "cifar-10-batches-py" in trials.loc["cifar10", "error"]
    # The grid's first trial failed; the second one still ran to its end.
    assert trials.loc["cifar10", "trial_id"].endswith("00000")
    assert trials.loc["digits", "trial_id"].endswith("00001")
    assert trials.loc["digits", "status"] == "TERMINATED"
    epochs = pd.read_parquet(out / "epochs")
    done = epochs[epochs["trial_id"] == trials.loc["digits", "trial_id"]]
    assert done["epoch"].tolist() == [1] and done["val/acc"].notna().all()
    assert "failed" in capsys.readouterr().out
