"""A two-stage sweep through the CLI and Ray Tune: stage 2 starts from stage 1's best checkpoints."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from orchestrator.cli import main

pytestmark = pytest.mark.slow

SWEEP = """
name: staged
dataset: {name: digits, subset: 256}
model: {img_size: 16}
optim: {lr: 3.0e-3, batch_size: 32, epochs: 2}
precision: fp32
search:
  model.name: {grid: [resnet10t, resnet14t]}
profilers: {latency: false, flops: false, memory: false}
resources: {cpu: 1}
stages:
  - name: pretrain
    trainable: train
  - name: finetune
    trainable: finetune
    from: pretrain
    # Too small a step to move the weights: its accuracy is the weights it started from.
    optim: {lr: 1.0e-9, weight_decay: 0.0, epochs: 1, max_train_batches: 1}
"""


@pytest.fixture(scope="module")
def staged_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    tmp = tmp_path_factory.mktemp("staged")
    (tmp / "staged.yaml").write_text(SWEEP)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    try:
        code = main([str(tmp / "staged.yaml"), "--output", str(tmp / "out"), "--quiet"])
    finally:
        mp.undo()
    return tmp, code


def test_each_finetune_trial_starts_from_its_own_models_best_pretrain_checkpoint(
    staged_run: tuple[Path, int],
) -> None:
    tmp, code = staged_run
    assert code == 0
    trials = pd.read_parquet(tmp / "out" / "trials")
    assert sorted(trials["stage"]) == ["finetune", "finetune", "pretrain", "pretrain"]
    pre = trials[trials["stage"] == "pretrain"].set_index("model.name")
    fine = trials[trials["stage"] == "finetune"].set_index("model.name")
    # Where a trial started is a fact in its own columns, not a searched parameter.
    assert not [c for c in trials.columns if c.startswith("start.")]
    assert set(fine["model.pretrained"].astype(str)) <= {"False", "false"}
    for name, row in fine.iterrows():
        source = pre.loc[name]
        # The checkpoint is the one of the stage-1 trial of the same model...
        assert row["start/stage"] == "pretrain"
        assert row["start/trial_id"] == source["trial_id"], (name, row["start/trial_id"])
        assert source["trial_id"] in row["start/checkpoint"], (name, row["start/checkpoint"])
        assert row["init/from_weights"] == 1 and row["init/loaded_tensors"] > 0
        # ...and it is that trial's best: stage 2's accuracy is stage 1's best, not chance (0.1).
        assert row["val/acc"] == pytest.approx(source["best/val/acc"], abs=0.05)
        assert row["val/acc"] > 0.3


def test_each_stage_is_its_own_mlflow_parent_run(staged_run: tuple[Path, int]) -> None:
    tmp, _ = staged_run
    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 2 and len(children) == 4
    assert children["tags.mlflow.parentRunId"].nunique() == 2
