"""The `prune_recover` trainable end to end on digits, without Ray (ListReporter)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.trial_helpers import prepared
from trainables import prune_recover
from trainables.config import TrialConfig
from trainables.loop.fit import fit
from trainables.loop.reporting import ListReporter
from trainables.models.checkpoints import save_model

TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "kwargs": {"patch_size": 8, "depth": 2, "embed_dim": 64, "num_heads": 4},
}


def trial(**overrides) -> dict:
    base = {
        "model": TINY_VIT,
        "dataset": {"name": "digits"},
        "precision": "fp32",
        "device": "cpu",
        "optim": {"lr": 2e-3, "batch_size": 64, "epochs": 4, "warmup_epochs": 0.0},
        "profilers": {"latency": None, "flops": {"train_step": False}, "time": None},
        "checkpoint": {"enabled": False},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    return base


@pytest.fixture(scope="module")
def dense_checkpoint(tmp_path_factory) -> Path:
    """A tiny ViT trained on digits for a few epochs: something worth pruning."""
    cfg = TrialConfig.model_validate(trial(trainable="train"))
    ctx, model = prepared(cfg)
    fit(ctx, model, ListReporter())
    return save_model(model, tmp_path_factory.mktemp("dense"))


@pytest.mark.slow  # trains a dense ViT first: ~30 s on 2 free cores
def test_recovery_beats_the_just_pruned_accuracy_on_digits(dense_checkpoint):
    reporter = ListReporter()
    config = trial(
        trainable="prune_recover",
        finetune={"checkpoint": str(dense_checkpoint)},
        optim={"lr": 5e-4},
        prune={"method": "unstructured", "ratio": 0.7, "recover_epochs": 2, "sensitivity": False},
    )
    prune_recover.run(config, reporter)
    last = reporter.trial_row()
    assert last["pruned/val/acc"] < last["dense/val/acc"]  # 70% of the weights gone does hurt
    assert last["recovered/val/acc"] > last["pruned/val/acc"]
    assert last["recovered/val/acc"] == last["val/acc"]  # masks baked in change nothing
    assert last["prune/sparsity"] == pytest.approx(0.7, abs=0.01)
    assert last["recovered/prune/sparsity"] == last["prune/sparsity"]  # held masks: no regrowth
    # Dense kernels do not care about zeros: MACs stay, only the sparse format shrinks.
    assert last["flops/fwd_gmacs"] == last["dense/flops/fwd_gmacs"]
    assert last["params/total"] == last["dense/params/total"]
    assert last["params/nonzero"] < 0.4 * last["dense/params/nonzero"]
    assert last["model/sparse_size_mb"] < last["model/size_mb"] < last["dense/model/sparse_size_mb"]
    phases = {r["phase"] for r in reporter.tables["weights"]}
    assert phases == {"before", "pruned", "recovered"}
    # fit() reported epochs 1 and 2; the recovered figures came once, in the trial-end report.
    assert [r["epoch"] for r in reporter.reports] == [1, 2]
    assert reporter.finals == 1 and "recovered/val/acc" in reporter.final
    assert not [k for r in reporter.reports for k in r if k.startswith(("recovered/", "dense/"))]


@pytest.mark.filterwarnings("ignore:prune_recover. no trained weights")
def test_structured_without_recovery_reports_the_pruned_model_once():
    reporter = ListReporter()
    config = trial(
        trainable="prune_recover",
        dataset={"subset": 128},
        optim={"max_val_batches": 1},
        prune={
            "method": "structured",
            "ratio": 0.5,
            "recover_epochs": 0,
            "sensitivity_ratios": [0.0, 0.5],
        },
    )
    prune_recover.run(config, reporter)
    assert len(reporter.reports) == 1 and reporter.finals == 0
    only = reporter.trial_row()
    assert only["epoch"] == 0 and only["val/acc"] == only["pruned/val/acc"]
    assert only["flops/fwd_gmacs"] < 0.7 * only["dense/flops/fwd_gmacs"]
    assert only["params/total"] < only["dense/params/total"]
    assert only["prune/sparsity"] == pytest.approx(0.5, abs=0.06)
    sens = reporter.tables["sensitivity"]
    units = {"blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"}
    assert sorted((r["layer"], r["ratio"]) for r in sens) == sorted(
        (u, r) for u in units for r in (0.0, 0.5)
    )
    assert all(r["acc_drop"] == 0 for r in sens if r["ratio"] == 0.0)
    assert {r["tag"] for r in reporter.tables["flops"]} == {"dense", ""}
    assert {r["phase"] for r in reporter.tables["weights"]} == {"before", "pruned"}


@pytest.mark.filterwarnings("ignore:prune_recover. no trained weights")
def test_sensitivity_allocation_still_hits_the_target():
    reporter = ListReporter()
    config = trial(
        trainable="prune_recover",
        dataset={"subset": 128},
        optim={"max_val_batches": 1},
        profilers={"latency": None, "flops": None, "time": None, "memory": None},
        prune={
            "ratio": 0.5,
            "allocation": "sensitivity",
            "recover_epochs": 0,
            "sensitivity_ratios": [0.3, 0.8],
        },
    )
    prune_recover.run(config, reporter)
    only = reporter.trial_row()
    assert only["prune/sparsity"] == pytest.approx(0.5, abs=0.01)
    per_layer = [r["sparsity"] for r in reporter.tables["pruned_layers"]]
    assert max(per_layer) - min(per_layer) > 0.05  # the scan set different ratios per layer
