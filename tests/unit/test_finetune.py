"""The finetune trainable on digits: trained weights help, a stage starts from the best checkpoint,
a frozen backbone stays put, another number of classes gets a new head."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from safetensors.torch import load_file

from trainables import finetune, train
from trainables.loop.reporting import ListReporter
from trainables.models.checkpoints import CHECKPOINT_FILE
from trainables.models.start_weights import UpstreamStageError

pytestmark = pytest.mark.slow  # a digits training run shared by the tests (~30 s CPU)

PROFILERS_OFF = {"latency": False, "flops": False, "memory": False}
# ImageNet statistics (timm data config), so BatchNorm settles within a few steps: a digits epoch
# in seconds, and val/acc well above chance after 16 steps.
MODEL = {"name": "resnet10t", "img_size": 16}


def config(trainable: str, **over: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "trainable": trainable,
        "model": dict(MODEL),
        "dataset": {"name": "digits"},
        "optim": {"batch_size": 64, "lr": 3e-3, "epochs": 1, "max_val_batches": 3},
        "precision": "fp32",
        "device": "cpu",
        "profilers": PROFILERS_OFF,
    }
    for key, value in over.items():
        section, _, leaf = key.partition("__")
        if leaf:
            cfg.setdefault(section, {})[leaf] = value
        else:
            cfg[section] = value
    return cfg


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> ListReporter:
    """Stage 1: two short epochs (8 batches each) of training on digits, a checkpoint after each."""
    reporter = ListReporter(keep_dir=tmp_path_factory.mktemp("pretrain"))
    train.run(config("train", optim__epochs=2, optim__max_train_batches=8), reporter)
    assert len(reporter.checkpoints) == 2
    return reporter


def best_checkpoint(run: ListReporter) -> str:
    i = max(range(len(run.reports)), key=lambda j: run.reports[j]["val/acc"])
    return str(Path(run.checkpoints[i]) / CHECKPOINT_FILE)


def test_finetune_from_digits_checkpoint_beats_the_same_trial_from_scratch(
    digits_run: ListReporter,
) -> None:
    def one_epoch(checkpoint: str | None) -> dict[str, Any]:
        reporter = ListReporter()
        expect_warning = pytest.warns(UserWarning, match="random init")
        with expect_warning if checkpoint is None else contextlib.nullcontext():
            finetune.run(
                config(
                    "finetune",
                    finetune__checkpoint=checkpoint,
                    optim__lr=1e-3,
                    optim__max_train_batches=3,
                    seed=1,
                ),
                reporter,
            )
        return reporter.trial_row()

    trained = one_epoch(best_checkpoint(digits_run))
    scratch = one_epoch(None)
    assert trained["init/from_weights"] == 1 and trained["init/loaded_tensors"] > 0
    assert scratch["init/from_weights"] == 0 and scratch["init/loaded_tensors"] is None
    print(
        f"val/acc from checkpoint {trained['val/acc']:.3f}, from scratch {scratch['val/acc']:.3f}"
    )
    assert trained["val/acc"] > 0.6 > scratch["val/acc"] + 0.2


def test_stage_two_starts_from_the_stage_one_best_weights(
    digits_run: ListReporter, tmp_path: Path
) -> None:
    # What the stage runner hands a stage-2 trial: `start:` with the upstream best checkpoint.
    start = best_checkpoint(digits_run)
    others = [str(Path(c) / CHECKPOINT_FILE) for c in digits_run.checkpoints]
    others = [o for o in others if o != start]

    # Stage 2 with a learning rate too small to move any weight: what it saves is what it loaded.
    reporter = ListReporter(keep_dir=tmp_path)
    finetune.run(
        config(
            "finetune",
            start={"stage": "pretrain", "trial_id": "t0001", "checkpoint": start},
            optim__lr=1e-12,
            optim__weight_decay=0.0,
            optim__max_train_batches=1,
            optim__max_val_batches=1,
        ),
        reporter,
    )
    saved = load_file(str(Path(reporter.checkpoints[0]) / CHECKPOINT_FILE))
    best = load_file(start)
    weights = [k for k in best if k.endswith(".weight")]
    for key in weights:
        torch.testing.assert_close(saved[key], best[key], atol=1e-8, rtol=0)
    # ...and not what random init or the other stage-1 checkpoint holds.
    assert others
    for other in others:
        o = load_file(other)
        assert any(not torch.equal(o[k], best[k]) for k in weights)
    torch.manual_seed(0)
    random_init = timm.create_model(MODEL["name"], num_classes=10).state_dict()
    assert any(not torch.equal(random_init[k], best[k]) for k in weights)
    row = reporter.trial_row()
    assert row["init/loaded_tensors"] == len(best)
    assert (row["start/stage"], row["start/trial_id"], row["start/checkpoint"]) == (
        "pretrain",
        "t0001",
        start,
    )


def test_a_failed_upstream_trial_fails_this_one_with_its_reason() -> None:
    cfg = config("finetune", start={"stage": "pretrain", "trial_id": "t9", "error": "NaN loss"})
    with pytest.raises(UpstreamStageError, match=r"trial t9 of stage 'pretrain'.*NaN loss"):
        finetune.run(cfg, ListReporter())


def test_frozen_backbone_with_new_classes_trains_only_a_new_head(
    digits_run: ListReporter, tmp_path: Path
) -> None:
    # A torch file (weights_only) from the digits run, fine-tuned on 5 synthetic classes.
    start = load_file(best_checkpoint(digits_run))
    torch.save({"state_dict": start}, tmp_path / "digits.pth")
    reporter = ListReporter(keep_dir=tmp_path / "ckpt")
    finetune.run(
        config(
            "finetune",
            dataset={"name": "synthetic", "num_classes": 5, "num_samples": 64},
            finetune={"checkpoint": str(tmp_path / "digits.pth"), "freeze_backbone": True},
            profilers={**PROFILERS_OFF, "params": {}},
            optim__lr=1e-2,
            optim__max_train_batches=2,
        ),
        reporter,
    )
    report = reporter.trial_row()
    head_in = start["fc.weight"].shape[1]
    assert report["init/head_reset"] == 1
    assert report["params/trainable"] == head_in * 5 + 5
    saved = load_file(str(Path(reporter.checkpoints[-1]) / CHECKPOINT_FILE))
    assert saved["fc.weight"].shape == (5, head_in)
    backbone = [k for k in start if k.endswith(".weight") and not k.startswith("fc.")]
    for key in backbone:
        assert torch.equal(saved[key], start[key]), key
