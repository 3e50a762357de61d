"""Faults with real processes: a SIGKILLed driver then `--resume`, a killed trial worker, a trial
that raises, two sweeps into one output folder at once. Each leaves every (trial, epoch) exactly
once in Parquet and in MLflow, and no MLflow run RUNNING.

The CLI runs as a subprocess in its own process group; a test ends that group and the processes
it recorded under it, nothing else.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.process_helpers import cli_env, epoch_rows, mlflow_runs, run_cli, steps, wait_for

EPOCHS = 5
# Generous: on 2 busy cores one Ray start plus a few tiny epochs can take minutes.
TIMEOUT = 600
SWEEP = f"""
name: NAME
trainable: train
model: {{name: resnet10t, img_size: 16}}
dataset: {{name: digits, subset: 192}}
optim: {{batch_size: 32, epochs: {EPOCHS}, max_val_batches: 1}}
precision: fp32
profilers: {{latency: false, flops: false}}
resources: {{cpu: 1}}
checkpoint: {{enabled: true, keep: last}}
"""


def _setup(tmp_path: Path, name: str, extra: str = "") -> tuple[Path, str, Path]:
    sweep = tmp_path / f"{name}.yaml"
    sweep.write_text(SWEEP.replace("NAME", name) + extra)
    return sweep, f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"


def _assert_each_epoch_once(out: Path, uri: str, name: str, trials: int, epochs: int) -> None:
    df = pd.read_parquet(out / "epochs")
    df = df[df["sweep"] == name]
    per_trial = df.groupby("trial_id")["epoch"].apply(sorted).tolist()
    assert per_trial == [list(range(1, epochs + 1))] * trials, per_trial
    runs = mlflow_runs(uri, name)
    parents = [r for r in runs if r.data.tags["lvmbench.role"] == "sweep"]
    children = [r for r in runs if r.data.tags["lvmbench.role"] == "trial"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    assert len(children) == trials
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.data.tags["lvmbench.trial_id"] for r in children) == sorted(set(df.trial_id))
    for run in children:
        assert steps(uri, run.info.run_id) == list(range(1, epochs + 1))
        assert steps(uri, run.info.run_id, "params/total") == [0]  # facts once, not per restart
    assert "RUNNING" not in {r.info.status for r in runs}


@pytest.mark.slow
def test_killed_driver_then_resume_keeps_one_run_per_trial(tmp_path: Path) -> None:
    sweep, uri, out = _setup(tmp_path, "killed", "search: {seed: {grid: [0, 1]}}\n")
    args = [str(sweep), "--output", str(out), "--quiet"]
    first = run_cli(args, env=cli_env(uri), log=tmp_path / "first.log")
    try:
        wait_for(lambda: epoch_rows(out / "epochs"), TIMEOUT, "a first epoch row", first)
        first.kill(signal.SIGKILL)
        first.proc.wait(30)
    finally:
        first.stop()
    done = [r for r in epoch_rows(out / "trials") if r["status"] == "TERMINATED"]
    assert len(done) < 2, "the sweep ended before the kill: nothing was interrupted"

    second = run_cli([*args, "--resume"], env=cli_env(uri), log=tmp_path / "second.log")
    try:
        assert second.wait(TIMEOUT) == 0, second.tail()
    finally:
        second.stop()
    _assert_each_epoch_once(out, uri, "killed", trials=2, epochs=EPOCHS)
    trials = pd.read_parquet(out / "trials")
    assert set(trials["status"]) == {"TERMINATED"}


@pytest.mark.slow
def test_killed_worker_retries_from_its_checkpoint(tmp_path: Path) -> None:
    sweep, uri, out = _setup(tmp_path, "worker", "max_failures: 1\n")
    run = run_cli(
        [str(sweep), "--output", str(out), "--quiet"], env=cli_env(uri), log=tmp_path / "run.log"
    )
    try:

        def trial_worker() -> object:
            if not any(r["epoch"] >= 2 for r in epoch_rows(out / "epochs")):
                return None
            for p in run.descendants():
                try:
                    if "ImplicitFunc" in " ".join(p.cmdline()):
                        return p
                except OSError:
                    continue
            return None

        worker = wait_for(trial_worker, TIMEOUT, "the trial's worker after epoch 2", run)
        worker.kill()
        assert run.wait(TIMEOUT) == 0, run.tail()
    finally:
        run.stop()
    _assert_each_epoch_once(out, uri, "worker", trials=1, epochs=EPOCHS)
    # Tune's own log of every result the driver received: two worker processes, and the second
    # one started after epoch 2 from the checkpoint, not from epoch 1.
    (result_file,) = out.glob("_tune/worker-*/*/result.json")
    results = [json.loads(line) for line in result_file.read_text().splitlines() if line.strip()]
    epochs_seen = [r["epoch"] for r in results if "epoch" in r]
    assert len({r["pid"] for r in results}) == 2
    assert epochs_seen.count(1) == 1 and epochs_seen[-1] == EPOCHS, epochs_seen


FAILING = """
name: failing
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 128}
optim: {name: sgd, batch_size: 32, epochs: 2, max_val_batches: 1}
precision: fp32
search: {optim.lr: {grid: [1.0e-3, 1.0e+30]}}
profilers: {latency: false, flops: false}
resources: {cpu: 1}
checkpoint: {enabled: false}
"""


@pytest.mark.slow
def test_a_failing_trial_is_recorded_and_the_others_finish(tmp_path: Path) -> None:
    sweep = tmp_path / "failing.yaml"
    sweep.write_text(FAILING)
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    run = run_cli(
        [str(sweep), "--output", str(out), "--quiet"], env=cli_env(uri), log=tmp_path / "run.log"
    )
    try:
        assert run.wait(TIMEOUT) == 1, run.tail()
    finally:
        run.stop()
    trials = pd.read_parquet(out / "trials").set_index("optim.lr")
    bad, good = trials.loc[1e30], trials.loc[1e-3]
    assert bad["status"] == "ERROR" and good["status"] == "TERMINATED"
    assert (
        bad["error_type"] == "trainables.loop.epoch.NonFiniteLossError"
        and "loss" in bad["error"].lower()
    )
    assert good["epochs_completed"] == 2
    runs = {
        r.data.params["optim.lr"]: r
        for r in mlflow_runs(uri, "failing")
        if r.data.params.get("optim.lr")
    }
    failed = runs[str(1e30)]
    assert failed.info.status == "FAILED"
    assert failed.data.tags["lvmbench.error_type"].endswith("NonFiniteLossError")
    assert runs[str(1e-3)].info.status == "FINISHED"


@pytest.mark.slow
def test_two_sweeps_into_one_output_folder_at_once(tmp_path: Path) -> None:
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    runs = []
    try:
        for name in ("left", "right"):
            sweep = tmp_path / f"{name}.yaml"
            sweep.write_text(FAILING.replace("failing", name).replace("1.0e+30", "2.0e-3"))
            runs.append(
                run_cli(
                    [str(sweep), "--output", str(out), "--quiet"],
                    env=cli_env(uri),
                    log=tmp_path / f"{name}.log",
                )
            )
        for run in runs:
            assert run.wait(TIMEOUT) == 0, run.tail()
    finally:
        for run in runs:
            run.stop()
    for name in ("left", "right"):
        _assert_each_epoch_once(out, uri, name, trials=2, epochs=2)
    trials = pd.read_parquet(out / "trials")
    assert sorted(trials["sweep"]) == ["left", "left", "right", "right"]


def test_restored_mlflow_sink_finds_its_runs_and_logs_no_step_twice(tmp_path: Path) -> None:
    """What `Tuner.restore` does to the sink (pickle, unpickle in a new driver), without Ray."""
    import pickle

    from orchestrator.sinks.mlflow_runs import MlflowSink
    from tests.integration.test_sinks import FACTS, FakeTrial, epoch

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sink = MlflowSink(
        uri, "resumed", "name: resumed\n", {"stage": ""}, {"lvmbench.sweep": "resumed"}
    )
    trials = [FakeTrial("t1"), FakeTrial("t2")]
    sink.setup()
    for t in trials:
        sink.log_trial_start(t)
        for n in (1, 2):
            sink.log_trial_result(n, t, epoch(n, 0.1 * n, facts=FACTS if n == 1 else None))
    state = pickle.dumps(sink)  # the driver dies here: its runs stay RUNNING

    again = pickle.loads(state)
    again.setup()
    for t in trials:
        t.status = "TERMINATED"
        again.log_trial_start(t)
        # The retried worker reports epoch 2 again (after its last checkpoint), with its facts.
        for n in (2, 3):
            again.log_trial_result(n, t, epoch(n, 0.1 * n, facts=FACTS if n == 2 else None))
        again.log_trial_end(t)
    again.on_experiment_end(trials)
    runs = mlflow_runs(uri, "resumed")
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        if run.data.tags["lvmbench.role"] == "trial":
            assert steps(uri, run.info.run_id) == [1, 2, 3]
            assert steps(uri, run.info.run_id, "params/total") == [0]
