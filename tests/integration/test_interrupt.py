"""Ctrl-C with real processes: SIGINT to a running sweep stops it cleanly (exit 130, MLflow runs
KILLED, pending trials counted, the `--resume` command printed last), and that command then
finishes every trial.

The CLI runs as a subprocess in its own process group; the test signals its pid and ends that
group, nothing else.
"""

from __future__ import annotations

import shlex
import signal
from pathlib import Path

import pandas as pd
import pytest

from tests.process_helpers import cli_env, epoch_rows, mlflow_runs, run_cli, wait_for

TIMEOUT = 600
SWEEP = """
name: interrupted
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 192}
optim: {batch_size: 32, epochs: 3, max_val_batches: 1}
precision: fp32
profilers: {latency: false, flops: false}
resources: {cpu: 1}
max_concurrent_trials: 1
checkpoint: {enabled: true, keep: last}
search: {seed: {grid: [0, 1, 2]}}
"""


@pytest.mark.slow
def test_sigint_stops_cleanly_and_the_printed_resume_finishes_every_trial(tmp_path: Path) -> None:
    sweep = tmp_path / "interrupted.yaml"
    sweep.write_text(SWEEP)
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    first = run_cli([str(sweep), "--output", str(out)], env=cli_env(uri), log=tmp_path / "a.log")
    try:
        wait_for(lambda: epoch_rows(out / "epochs"), TIMEOUT, "a first epoch row", first)
        first.proc.send_signal(signal.SIGINT)
        code = first.wait(TIMEOUT)
    finally:
        first.stop()
    log = (tmp_path / "a.log").read_text(errors="replace")
    assert code == 130, log[-3000:]
    lines = [line for line in log.splitlines() if line.strip()]
    resume = shlex.split(lines[-1])
    assert resume[:3] == ["python", "-m", "orchestrator"] and resume[-1] == "--resume", lines[-1]
    assert "pending" in log, log[-3000:]  # three trials, one at a time: some never started
    runs = mlflow_runs(uri, "interrupted")
    assert "RUNNING" not in {r.info.status for r in runs}
    parent = next(r for r in runs if r.data.tags["lvmbench.role"] == "sweep")
    assert parent.info.status == "KILLED"

    second = run_cli(resume[3:], env=cli_env(uri), log=tmp_path / "b.log")
    try:
        assert second.wait(TIMEOUT) == 0, second.tail()
    finally:
        second.stop()
    trials = pd.read_parquet(out / "trials")
    assert len(trials) == 3 and set(trials["status"]) == {"TERMINATED"}, trials["status"]
