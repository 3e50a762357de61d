"""Same config and seed, same trial: a LoRA trial run twice in one process (as a reused worker
runs them) gives equal metrics and equal adapter weights, although the profilers ran a different
number of times before each (the peak-FLOPs probe runs once per process; the latency profiler's
repeats differ): profilers draw from their own random state (`profilers.rng`)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from profilers import fingerprint
from trainables import lora
from trainables.loop.reporting import ListReporter

KWARGS = {"patch_size": 8, "depth": 1, "embed_dim": 64, "num_heads": 2}


def run_once(monkeypatch: pytest.MonkeyPatch, repeats: int) -> tuple[list[dict[str, Any]], dict]:
    cfg: dict[str, Any] = {
        "trainable": "lora",
        "model": {"name": "vit_tiny_patch16_224", "img_size": 16, "kwargs": KWARGS},
        "dataset": {"name": "digits", "subset": 96},
        "optim": {"batch_size": 16, "epochs": 2, "max_train_batches": 3, "max_val_batches": 2},
        # Dropout draws from the trial's random stream every step: a shifted stream shows.
        "lora": {"rank": 4, "alpha": 8, "dropout": 0.2, "target_modules": ["qkv", "proj"]},
        "precision": "fp32",
        "device": "cpu",
        "seed": 3,
        "profilers": {"latency": {"batch_sizes": [1], "warmup": 1, "repeats": repeats}},
    }
    adapters: dict[str, torch.Tensor] = {}
    real_fit = lora.fit

    def fit_and_keep(ctx: Any, model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = real_fit(ctx, model, *args, **kwargs)
        adapters.update(
            {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}
        )
        return out

    monkeypatch.setattr(lora, "fit", fit_and_keep)
    reporter = ListReporter()
    lora.run(cfg, reporter)
    return [{k: r.get(k) for k in ("val/acc", "train/loss")} for r in reporter.reports], adapters


def test_two_runs_of_a_lora_trial_give_equal_accuracy_and_adapter_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fingerprint._measure.cache_clear()  # the first run measures the peak, the second does not
    first, first_adapters = run_once(monkeypatch, repeats=3)
    second, second_adapters = run_once(monkeypatch, repeats=7)
    assert len(first) == 2 and all(e["train/loss"] is not None for e in first)
    # Per epoch: val/acc (so best/val/acc, its maximum) and the training loss, exactly.
    assert first == second
    assert first_adapters and first_adapters.keys() == second_adapters.keys()
    for key, value in first_adapters.items():
        assert torch.equal(value, second_adapters[key]), key
