"""Out of memory as data: `optim.auto_batch_size` halves the batch until a step fits, and an OOM
during training is recorded with its batch size and memory.

A CPU cannot run out of device memory safely, so the OOM is injected: a model whose forward
raises `torch.OutOfMemoryError` above a batch size, as CUDA's allocator would.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from trainables.config import TrialConfig
from trainables.loop.auto_batch import (
    BatchSizeError,
    fit_batch_size,
    kept_state,
    next_batch_size,
    oom_facts,
    with_batch_size,
)
from trainables.loop.fit import fit
from trainables.loop.reporting import ListReporter
from trainables.loop.setup import TrialSetup


class OomAbove(nn.Module):
    """A small CNN that 'runs out of memory' on batches larger than `limit`."""

    def __init__(self, limit: int, num_classes: int = 10) -> None:
        super().__init__()
        self.limit = limit
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(8, num_classes)
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected at batch {x.shape[0]})")
        return self.head(self.body(x))


def oom_step(limit: int, tried: list[int]) -> Any:
    def step(batch_size: int) -> None:
        tried.append(batch_size)
        if batch_size > limit:
            raise torch.OutOfMemoryError(f"injected at {batch_size}")

    return step


def test_halves_until_a_step_fits() -> None:
    tried: list[int] = []
    size, too_big = fit_batch_size(oom_step(8, tried), 64)
    assert (size, too_big, tried) == (8, [64, 32, 16], [64, 32, 16, 8])


def test_steps_down_to_powers_of_two_like_timm() -> None:
    tried: list[int] = []
    size, _ = fit_batch_size(oom_step(10, tried), 48)
    assert tried == [48, 32, 16, 8] and size == 8
    assert [next_batch_size(n) for n in (64, 48, 3, 2, 1)] == [32, 32, 2, 1, 0]


def test_a_fitting_start_is_kept() -> None:
    tried: list[int] = []
    assert fit_batch_size(oom_step(100, tried), 64) == (64, [])
    assert tried == [64]


def test_workers_agree_on_the_smallest_size() -> None:
    size, too_big = fit_batch_size(oom_step(32, []), 64, agree=lambda mine: min(mine, 8))
    assert size == 8 and too_big == [64]


def test_no_size_fits_names_every_size_tried() -> None:
    with pytest.raises(BatchSizeError, match=r"every batch size tried \(4, 2, 1\)"):
        fit_batch_size(oom_step(0, []), 4)


def test_other_errors_are_not_swallowed() -> None:
    def step(batch_size: int) -> None:
        raise ValueError("a shape error is no OOM")

    with pytest.raises(ValueError, match="no OOM"):
        fit_batch_size(step, 64)


def test_probing_leaves_weights_optimizer_and_rng_as_they_were() -> None:
    torch.manual_seed(0)
    model = OomAbove(limit=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    expected_draw = torch.random.get_rng_state()
    with kept_state(model, optimizer):
        loss = model(torch.randn(4, 3, 8, 8)).sum()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not optimizer.state
    assert torch.equal(torch.random.get_rng_state(), expected_draw)


def test_with_batch_size_keeps_the_loader_settings() -> None:
    data = torch.utils.data.TensorDataset(torch.arange(10))
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True)
    smaller = with_batch_size(loader, 2)
    assert smaller.batch_size == 2 and isinstance(smaller.sampler, torch.utils.data.RandomSampler)
    assert sorted(int(x) for (b,) in smaller for x in b) == list(range(10))


def test_oom_facts_on_cpu_are_null_with_a_reason() -> None:
    facts = oom_facts(torch.device("cpu"), 64, "train", 2)
    assert facts["oom/batch_size"] == 64 and facts["oom/epoch"] == 2
    assert facts["oom/gpu_allocated_mb"] is None and "cpu" in facts["oom/null_reason"]


def _trial(batch_size: int, auto: bool) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "model": {"name": "resnet10t", "img_size": 8},
            "dataset": {"name": "digits", "subset": 96},
            "optim": {"batch_size": batch_size, "epochs": 2, "auto_batch_size": auto},
            "precision": "fp32",
            "device": "cpu",
            "checkpoint": {"enabled": False},
            "profilers": {"latency": None, "flops": None},
        }
    )


def _run(cfg: TrialConfig, limit: int) -> tuple[ListReporter, OomAbove]:
    setup = TrialSetup.begin(cfg)
    model = OomAbove(limit, setup.num_classes)
    ctx = setup.with_model(model)
    reporter = ListReporter()
    fit(ctx, model, reporter, facts={"params/total": 1})
    return reporter, model


def test_auto_batch_size_trains_with_the_size_that_fits() -> None:
    reporter, model = _run(_trial(64, auto=True), limit=16)
    assert reporter.facts["optim/batch_size_used"] == 16
    assert reporter.facts["optim/auto_batch_oom_sizes"] == "64,32"
    assert reporter.facts["params/total"] == 1  # the trainable's own facts still ride along
    assert len(reporter.reports) == 2
    # The probe tried 64, 32, 16; training and evaluation then ran at 16 (an epoch's last
    # batch may be smaller).
    assert model.batches[:3] == [64, 32, 16] and max(model.batches[3:]) == 16
    assert all(r["train/samples"] == 96 for r in reporter.reports)


def test_oom_during_training_is_recorded_and_raised() -> None:
    with pytest.raises(torch.OutOfMemoryError, match="at batch size 32 per worker") as err:
        _run(_trial(32, auto=False), limit=16)
    assert "injected at batch 32" in str(err.value)


def test_oom_facts_reach_the_trial_row() -> None:
    cfg = _trial(32, auto=False)
    setup = TrialSetup.begin(cfg)
    model = OomAbove(16, setup.num_classes)
    reporter = ListReporter()
    with pytest.raises(torch.OutOfMemoryError):
        fit(setup.with_model(model), model, reporter, facts={"params/total": 1})
    assert reporter.finals == 1 and not reporter.reports
    row = reporter.trial_row()
    assert row["oom/batch_size"] == 32 and row["oom/phase"] == "train" and row["oom/epoch"] == 1
    assert row["oom/gpu_allocated_mb"] is None and row["oom/null_reason"]
    # Facts that had not gone out yet go with the OOM record.
    assert row["params/total"] == 1


def test_oom_facts_survive_the_trial_scope() -> None:
    """Through the wrapper every runner uses (trainables.loop.scope): a failed trial still sends
    its OOM record in the one trial-end report."""
    from trainables.loop.scope import scoped

    def run(config: dict[str, Any], reporter: Any) -> None:
        cfg = TrialConfig.model_validate(config)
        setup = TrialSetup.begin(cfg)
        model = OomAbove(16, setup.num_classes)
        fit(setup.with_model(model), model, reporter, facts={"params/total": 1})

    reporter = ListReporter()
    with pytest.raises(torch.OutOfMemoryError):
        scoped(run)(_trial(32, auto=False).model_dump(mode="json"), reporter)
    assert reporter.finals == 1
    assert reporter.final["oom/batch_size"] == 32 and reporter.final["time/total_s"] > 0
