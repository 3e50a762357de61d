"""A trial's record reruns it; `--resume --retry-failed` turns an errored trial into a finished one.

The rerun test runs the trial's `rerun` command (its resolved config as a one-trial sweep file) and
compares config and identity columns. The retry sweep starts from a local checkpoint file that is
garbage on the first run (the trial fails) and valid weights on the retry.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.tables import PARAM_COLUMNS
from tests.process_helpers import cli_env, mlflow_runs, run_cli

TIMEOUT = 600
SWEEP = """
name: NAME
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 96}
optim: {batch_size: 32, epochs: 1, max_train_batches: 2, max_val_batches: 1}
precision: fp32
profilers: {latency: false, flops: false}
checkpoint: {enabled: false}
resources: {cpu: 1}
"""


def _rerun_args(command: str) -> list[str]:
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "orchestrator"], command
    return words[3:]


def test_a_trials_rerun_command_reproduces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = tmp_path / "rerun.yaml"
    sweep.write_text(
        SWEEP.replace("NAME", "rerun")
        + "seed: 4\nnum_samples: 2\ncost: {usd_per_hour: 3.0}\n"
        + "search: {optim.lr: {loguniform: [1.0e-4, 1.0e-2]}, optim.label_smoothing: {choice: [0.0, 0.1]}}\n"
    )
    out = tmp_path / "out"
    assert main(["trial", str(sweep), "--index", "1", "--output", str(out)]) == 0
    (first,) = pd.read_parquet(out / "trials").to_dict("records")
    assert main(_rerun_args(first["rerun"])) == 0
    rows = pd.read_parquet(out / "trials")
    again = rows[rows.trial_id != first["trial_id"]].iloc[0].to_dict()
    assert again["config/yaml"] == first["config/yaml"]
    identity = [c for c in PARAM_COLUMNS if c in rows.columns]
    # NaN-aware: a null param is null in both.
    assert pd.Series(again)[identity].equals(pd.Series(first)[identity])
    # Cost follows the trial's wall time (the price is the sweep's, not the trial config's);
    # energy says why it is null where nothing is readable.
    assert first["cost/usd"] == pytest.approx(first["time/total_s"] / 3600 * 3.0, rel=0.01)
    for row in (first, again):
        assert row["env/git_sha"] and row["env/packages_sha256"]
        assert (
            row["energy/trial_j"] is None or row["energy/trial_j"] != row["energy/trial_j"]
        ) == (row["energy/reason"] is not None)


@pytest.mark.slow
def test_retry_failed_turns_an_errored_trial_into_a_finished_one(tmp_path: Path) -> None:
    weights = tmp_path / "start.safetensors"
    weights.write_bytes(b"not a checkpoint")  # the first run fails loading it
    sweep = tmp_path / "retry.yaml"
    sweep.write_text(
        SWEEP.replace("NAME", "retry").replace(
            "model: {name: resnet10t, img_size: 16}",
            f"model: {{name: resnet10t, img_size: 16, pretrained: {weights}}}",
        )
    )
    uri, out = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    args = [str(sweep), "--output", str(out), "--quiet"]
    first = run_cli(args, env=cli_env(uri), log=tmp_path / "first.log")
    try:
        assert first.wait(TIMEOUT) == 1, first.tail()
    finally:
        first.stop()
    assert set(pd.read_parquet(out / "trials")["status"]) == {"ERROR"}

    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet10t", num_classes=10)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    second = run_cli(
        [*args, "--resume", "--retry-failed"], env=cli_env(uri), log=tmp_path / "2.log"
    )
    try:
        assert second.wait(TIMEOUT) == 0, second.tail()
    finally:
        second.stop()
    trials = pd.read_parquet(out / "trials")
    assert len(trials) == 1 and trials.iloc[0]["status"] == "TERMINATED"
    assert pd.isna(trials.iloc[0]["error"])
    children = [r for r in mlflow_runs(uri, "retry") if r.data.tags["lvmbench.role"] == "trial"]
    assert len(children) == 1 and children[0].info.status == "FINISHED"
    assert "lvmbench.error" not in children[0].data.tags
    assert children[0].data.tags["lvmbench.rerun"] == trials.iloc[0]["rerun"]
