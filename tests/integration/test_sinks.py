"""The driver's sinks on Tune's LoggerCallback hooks: epoch reports become epoch rows, per-trial
facts land once in `trials` (also for a trial stopped early), the trial-end report lands in
`trials` and MLflow without a new epoch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from mlflow import MlflowClient

from orchestrator.sinks.mlflow_runs import MlflowSink
from orchestrator.sinks.parquet_rows import ParquetSink
from trainables.loop.reporting import payload

CONFIG = {"trainable": "lora", "model": {"name": "resnet18"}, "lora": {"rank": 4}}
FACTS = {"params/total": 1000, "flops/fwd_gmacs": 0.5, "env/device": "cpu"}
FINAL = {"merged/flops/fwd_gmacs": 0.4, "lora/merge_max_abs_diff": 1e-7}
TABLES = {"latency": [{"tag": "", "batch_size": 1, "latency_ms_p50": 2.0}]}


@dataclass
class FakeTrial:
    """The parts of a Ray Tune Trial the sinks read."""

    trial_id: str
    config: dict[str, Any] = field(default_factory=lambda: dict(CONFIG))
    error_file: str | None = None
    path: str | None = None

    def get_error(self) -> str | None:
        return None


def epoch(n: int, acc: float, **extra: Any) -> dict[str, Any]:
    metrics = {"epoch": n, "val/acc": acc, "train/loss": 1.0 / n}
    return {**payload(metrics, **extra), "training_iteration": n, "trial_id": "x", "done": False}


def final() -> dict[str, Any]:
    # As TuneReporter sends it: the last epoch's metrics repeated for Tune's display.
    repeated = {"epoch": 2, "val/acc": 0.7, "train/loss": 0.5}
    return {**payload(repeated, facts=FINAL, final=True), "training_iteration": 3, "trial_id": "x"}


def drive(sink: Any, trial: FakeTrial, results: list[dict[str, Any]], failed: bool = False) -> None:
    sink.log_trial_start(trial)
    for i, result in enumerate(results):
        sink.log_trial_result(i + 1, trial, result)
    sink.log_trial_end(trial, failed=failed)


def test_parquet_epoch_rows_hold_epoch_metrics_and_trials_hold_facts(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path, "s")
    results = [epoch(1, 0.5, facts=FACTS, tables=TABLES), epoch(2, 0.7), final()]
    drive(sink, FakeTrial("t1"), results)
    epochs = pd.read_parquet(tmp_path / "epochs")
    trials = pd.read_parquet(tmp_path / "trials")
    assert sorted(epochs["epoch"]) == [1, 2]  # the trial-end report adds no epoch
    assert not set(FACTS) & set(epochs.columns) and not set(FINAL) & set(epochs.columns)
    row = trials.iloc[0]
    assert row["status"] == "TERMINATED" and row["epochs_completed"] == 2
    assert row["params/total"] == 1000 and row["merged/flops/fwd_gmacs"] == 0.4
    assert row["val/acc"] == 0.7 and row["best/val/acc"] == 0.7
    assert len(pd.read_parquet(tmp_path / "latency")) == 1


def test_a_trial_stopped_after_one_epoch_keeps_its_facts(tmp_path: Path) -> None:
    """ASHA stops a trial by ending it after any epoch: its static facts came with epoch 1."""
    sink = ParquetSink(tmp_path, "s")
    drive(sink, FakeTrial("t2"), [epoch(1, 0.3, facts=FACTS)])
    row = pd.read_parquet(tmp_path / "trials").iloc[0]
    assert row["params/total"] == 1000 and row["env/device"] == "cpu"
    assert row["epochs_completed"] == 1


def test_lora_flops_keep_both_the_unmerged_and_the_merged_rows(tmp_path: Path) -> None:
    """The unmerged profile's FLOPs rows come with epoch 1, the merged ones in the trial-end
    report: both stay. A profile sent again (a restored trial) replaces its own rows only."""
    sink = ParquetSink(tmp_path, "s")
    unmerged = {"flops": [{"tag": "", "input_size": 16, "fwd_gmacs": 0.5}]}
    merged = {"flops": [{"tag": "merged", "input_size": 16, "fwd_gmacs": 0.4}]}
    end = final()
    end["_tables"] = merged
    again = {"flops": [{"tag": "", "input_size": 16, "fwd_gmacs": 0.5}]}
    drive(sink, FakeTrial("t3"), [epoch(1, 0.5, tables=unmerged), epoch(2, 0.7, tables=again), end])
    flops = pd.read_parquet(tmp_path / "flops")
    assert sorted(flops["tag"]) == ["", "merged"]
    assert flops.set_index("tag")["fwd_gmacs"].to_dict() == {"": 0.5, "merged": 0.4}


def test_start_is_its_own_column_not_a_param(tmp_path: Path) -> None:
    start = {"stage": "pretrain", "trial_id": "abc", "checkpoint": "/x/model.safetensors"}
    sink = ParquetSink(tmp_path, "s")
    drive(sink, FakeTrial("t3", config={**CONFIG, "start": start}), [epoch(1, 0.3)])
    trials = pd.read_parquet(tmp_path / "trials")
    epochs = pd.read_parquet(tmp_path / "epochs")
    assert trials.iloc[0]["start/checkpoint"] == "/x/model.safetensors"
    assert trials.iloc[0]["start/trial_id"] == "abc"
    for table in (trials, epochs):
        assert not [c for c in table.columns if c.startswith("start.")]
        assert "/x/model.safetensors" not in table["model.pretrained"].astype(str).tolist()


@pytest.fixture
def client(mlflow_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri)


def test_mlflow_gets_each_metric_once_per_step(mlflow_uri: str, client: MlflowClient) -> None:
    sink = MlflowSink(mlflow_uri, "s", "name: s\n", {"trainable": "lora"}, {})
    sink.setup()
    trial = FakeTrial("t4")
    drive(sink, trial, [epoch(1, 0.5, facts=FACTS, tables=TABLES), epoch(2, 0.7), final()])
    run_id = sink._children["t4"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/acc")] == [
        (1, 0.5),
        (2, 0.7),
    ]
    assert [m.step for m in client.get_metric_history(run_id, "params/total")] == [0]
    # Trial-end facts at the last epoch's step, once; text facts are tags.
    assert [m.step for m in client.get_metric_history(run_id, "merged/flops/fwd_gmacs")] == [2]
    assert run.data.tags["env/device"] == "cpu"
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)


def test_both_sinks_share_one_split_and_one_params_flattening(
    mlflow_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tune hands every callback the same result: it is split once, and a trial's config is
    validated and flattened once for both sinks."""
    import orchestrator.sinks.results as results
    import orchestrator.tables as tables

    calls = {"split": 0, "flatten": 0}
    real_split, real_flatten = results._split, tables.flatten_params

    def split(result: dict[str, Any]) -> Any:
        calls["split"] += 1
        return real_split(result)

    def flatten(config: dict[str, Any]) -> dict[str, Any]:
        calls["flatten"] += 1
        return real_flatten(config)

    monkeypatch.setattr(results, "_split", split)
    monkeypatch.setattr(tables, "flatten_params", flatten)
    sinks = [ParquetSink(tmp_path, "s"), MlflowSink(mlflow_uri, "s", "name: s\n", {}, {})]
    trial = FakeTrial("t5")
    reports = [epoch(1, 0.5, facts=FACTS, tables=TABLES), epoch(2, 0.7), final()]
    for sink in sinks:
        sink.log_trial_start(trial)
    for i, result in enumerate(reports):
        for sink in sinks:
            sink.log_trial_result(i + 1, trial, result)
    for sink in sinks:
        sink.log_trial_end(trial)
    assert calls == {"split": 3, "flatten": 1}
    assert pd.read_parquet(tmp_path / "trials").iloc[0]["merged/flops/fwd_gmacs"] == 0.4


def test_parent_run_started_in_the_background_is_ended_without_trials(
    mlflow_uri: str, client: MlflowClient
) -> None:
    sink = MlflowSink(mlflow_uri, "empty", "name: empty\n", {"trainable": "train"}, {})
    sink.setup()  # opens the store and creates the parent run on a thread of its own
    sink.on_experiment_end([])
    (run,) = client.search_runs([client.get_experiment_by_name("empty").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["lvmbench.role"] == "sweep"


def test_a_store_that_cannot_open_fails_the_first_trial_start(tmp_path: Path) -> None:
    # The background start must not swallow the error: the first call that needs the run raises.
    blocked = tmp_path / "not_a_dir"
    blocked.write_text("a file where the store's folder would be")
    sink = MlflowSink(f"sqlite:///{blocked}/mlflow.db", "s", "name: s\n", {}, {})
    sink.setup()
    with pytest.raises(OSError, match="not_a_dir"):
        sink.log_trial_start(FakeTrial("t1"))
