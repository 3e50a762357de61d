"""The shared fit loop, run without Ray: it learns, reports every epoch (per-trial facts only with
the first report), follows timm's schedule, checkpoints and resumes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from torch import nn

from tests.trial_helpers import prepared
from trainables.config import TrialConfig
from trainables.loop.epoch import NonFiniteLossError
from trainables.loop.fit import fit
from trainables.loop.reporting import FACTS_KEY, ListReporter
from trainables.loop.setup import TrialSetup
from trainables.models.create import create_model

EPOCH_KEYS = {
    "epoch",
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/f1_macro",
    "time/epoch_s",
    "time/samples_per_s",
}


def small_cfg(**optim: object) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "model": {"name": "resnet10t", "img_size": 16},
            "dataset": {"name": "digits", "subset": 320},
            "optim": {"lr": 2e-3, "batch_size": 32, "epochs": 2, **optim},
            "precision": "fp32",
            "profilers": {"latency": False, "flops": False},
        }
    )


def test_fit_learns_digits_and_reports_each_epoch() -> None:
    cfg = small_cfg(epochs=3)
    ctx, model = prepared(cfg)
    reporter = ListReporter()
    sent: list[dict] = []
    real_emit = reporter.emit

    def spy(result, checkpoint_dir):
        sent.append(result.get(FACTS_KEY) or {})
        real_emit(result, checkpoint_dir)

    reporter.emit = spy  # type: ignore[method-assign]
    # With the model's training FLOPs (the flops profiler's fact) the timer measures the CPU peak.
    fit(ctx, model, reporter, facts={"x/y": 1.0, "flops/train_step_gflops": 0.01})
    assert [r["epoch"] for r in reporter.reports] == [1, 2, 3]
    assert set(reporter.reports[0]) >= EPOCH_KEYS
    # Facts go once, with the first report; later ones carry the trial's running times only.
    assert [set(f) for f in sent[1:]] == [{"time/total_s", "time/train_total_s"}] * 2
    assert sent[0]["x/y"] == 1.0 and sent[0]["time/peak_source"] == "measured"
    assert all("x/y" not in r for r in reporter.reports)
    assert reporter.trial_row()["x/y"] == 1.0
    assert reporter.reports[-1]["val/acc"] > 0.5  # chance is 0.1
    assert reporter.reports[-1]["train/loss"] < reporter.reports[0]["train/loss"]


def test_checkpoint_resumes_after_last_epoch(tmp_path: Path) -> None:
    cfg = small_cfg(epochs=2, max_train_batches=2, max_val_batches=1)
    ctx, _ = prepared(cfg)
    first = ListReporter(keep_dir=tmp_path)
    fit(ctx, create_model(cfg.model, 10), first, epochs=1)
    assert len(first.checkpoints) == 1
    resumed = ListReporter(resume_from=first.checkpoints[0])
    fit(ctx, create_model(cfg.model, 10), resumed)
    assert [r["epoch"] for r in resumed.reports] == [2]


def test_nan_loss_fails_the_trial() -> None:
    cfg = small_cfg(epochs=1, max_train_batches=2, max_val_batches=1, scheduler="none")
    ctx, _ = prepared(cfg)

    class Exploding(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(nn.init.ones_(nn.Linear(1, 1).weight))

        def forward(self, x):
            return x.flatten(1)[:, :10] * float("nan") * self.w.sum()

    with pytest.raises(NonFiniteLossError, match="train/loss"):
        fit(ctx, Exploding(), ListReporter())


def test_fp16_on_cpu_is_refused() -> None:
    cfg = small_cfg()
    cfg.precision = "fp16"
    cfg.device = "cpu"
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        TrialSetup.begin(cfg)


def test_cosine_schedule_warms_up_then_decays() -> None:
    """timm's cosine schedule, stepped per update: up during warm-up, down to ~0 at the end."""
    cfg = small_cfg(epochs=4, max_train_batches=4, max_val_batches=1, warmup_epochs=1.0)
    ctx, model = prepared(cfg)
    reporter = ListReporter()
    fit(ctx, model, reporter)
    lrs = [r["optim/lr"] for r in reporter.reports]
    # After one epoch of warm-up the cosine (over all 16 updates, warm-up included) is at
    # 0.5 * (1 + cos(pi * 4 / 16)) of the peak.
    assert lrs[0] == pytest.approx(cfg.optim.lr * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-6)
    assert lrs[0] > lrs[1] > lrs[2] > lrs[3]
    assert lrs[3] < 0.2 * cfg.optim.lr


@pytest.mark.parametrize("seed", range(5))
def test_macro_f1_is_scikit_learns(seed: int) -> None:
    from sklearn.metrics import f1_score

    from trainables.loop.epoch import macro_f1

    rng = np.random.default_rng(seed)
    # Labels missing from one side, or predicted but never true, count as sklearn counts them.
    true = rng.integers(0, 7, size=50)
    pred = np.where(rng.random(50) < 0.6, true, rng.integers(0, 9, size=50))
    assert macro_f1(true, pred) == pytest.approx(
        f1_score(true, pred, average="macro", zero_division=0)
    )
    assert macro_f1(true, true) == 1.0
