"""Early stopping (ASHA) keeps every trial's trial-end facts: a trial that trains to its last
epoch still sends its trial-end report, and one stopped at a rung keeps its running times."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from orchestrator.cli import main
from orchestrator.driver.sweep_runner import TrialEndASHA
from trainables.loop.reporting import FINAL_KEY

SWEEP = """
name: asha
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 64}
optim: {batch_size: 16, epochs: 2, max_train_batches: 1, max_val_batches: 1}
precision: fp32
search:
  optim.lr: {grid: [1.0e-4, 1.0e-3, 1.0e-2]}
scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
profilers: {latency: false, flops: false}
resources: {cpu: 1}
checkpoint: {enabled: false}
"""


def test_the_last_epoch_and_the_trial_end_report_are_not_judged() -> None:
    trial = SimpleNamespace(trial_id="t1")
    plain = ASHAScheduler(metric="val/acc", mode="max", max_t=2, grace_period=1)
    ours = TrialEndASHA(metric="val/acc", mode="max", max_t=2, grace_period=1)
    for scheduler in (plain, ours):
        scheduler.on_trial_add(None, trial)
    last_epoch = {"training_iteration": 2, "val/acc": 0.5}
    # Ray's own stops the trial at its last epoch, before its trial-end report.
    assert plain.on_trial_result(None, trial, last_epoch) == TrialScheduler.STOP
    assert ours.on_trial_result(None, trial, last_epoch) == TrialScheduler.CONTINUE
    final = {"training_iteration": 3, "val/acc": 0.5, FINAL_KEY: True}
    assert ours.on_trial_result(None, trial, final) == TrialScheduler.CONTINUE


@pytest.mark.slow  # three one-batch trials on Ray: ~40 s on 2 cores
def test_asha_sweep_has_the_trial_end_facts_of_every_trial(tmp_path: Path, mlflow_uri: str) -> None:
    import ray

    sweep = tmp_path / "asha.yaml"
    sweep.write_text(SWEEP)
    try:
        assert main([str(sweep), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    finally:
        # The sweep ran in this process: end the Ray session it started, so later tests start
        # from none (tests/integration/test_bad_input.py checks that bad input starts no Ray).
        ray.shutdown()
    trials = pd.read_parquet(tmp_path / "out" / "trials")
    assert len(trials) == 3
    assert trials["time/total_s"].notna().all() and (trials["time/total_s"] > 0).all()
    assert trials["time/train_total_s"].notna().all()
    finished = trials[trials["epochs_completed"] == 2]
    assert len(finished) >= 1  # the first trial at the rung has no one to lose to
    # A trial's total covers its training epochs.
    assert (trials["time/total_s"] >= trials["time/train_total_s"]).all()
