"""On a CUDA device: fp16 with Accelerate's GradScaler, bf16 autocast, data kept on the device,
and torch.compile, each through a one-batch trial (`fit`)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from tests.gpu.helpers import first_conv_autocast, one_batch_cfg
from tests.trial_helpers import prepared
from trainables.loop.fit import fit
from trainables.loop.reporting import ListReporter

pytestmark = pytest.mark.gpu


def _finite_loss(reporter: ListReporter) -> float:
    loss = reporter.reports[0]["train/loss"]
    assert loss is not None and math.isfinite(loss), reporter.reports[0]
    return float(loss)


def test_fp16_scales_the_loss_through_accelerate_on_cuda() -> None:
    ctx, model = prepared(one_batch_cfg(precision="fp16", device="cuda"))
    scaler = ctx.accelerator.scaler
    assert scaler is not None and scaler.is_enabled()  # Accelerate's GradScaler
    seen = first_conv_autocast(model)
    reporter = ListReporter()
    fit(ctx, model, reporter)
    _finite_loss(reporter)
    # the training forward ran under fp16 autocast on the GPU
    assert any(
        s["input_cuda"] and s["autocast"] and s["out_dtype"] == torch.float16 for s in seen
    ), seen
    # the scaler has run: its scale is a real number (65536 at start, halved on an inf step)
    assert 0 < scaler.get_scale() <= 2.0**16


def test_bf16_autocasts_without_a_scaler_on_cuda() -> None:
    ctx, model = prepared(one_batch_cfg(precision="bf16", device="cuda"))
    assert ctx.accelerator.scaler is None  # bf16 needs no loss scaling
    seen = first_conv_autocast(model)
    reporter = ListReporter()
    fit(ctx, model, reporter)
    _finite_loss(reporter)
    assert any(
        s["input_cuda"]
        and s["autocast"]
        and s["autocast_dtype"] == torch.bfloat16
        and s["out_dtype"] == torch.bfloat16
        for s in seen
    ), seen
    assert not any(s["autocast_dtype"] == torch.float16 and s["autocast"] for s in seen)
    # the weights the optimizer updates stay fp32 (mixed precision, not a bf16 model)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_on_device_data_lives_on_the_gpu() -> None:
    cfg = one_batch_cfg(device="cuda", dataset={"name": "digits", "subset": 32, "on_device": True})
    ctx, model = prepared(cfg)
    images, labels = next(iter(ctx.train_loader))
    assert images.is_cuda and labels.is_cuda
    reporter = ListReporter()
    fit(ctx, model, reporter)
    assert reporter.reports[0]["time/data_s"] >= 0
    _finite_loss(reporter)


def test_compiled_model_trains_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.compile (inductor) is applied to the trial's model and its graphs run on the GPU."""
    calls: list[dict[str, Any]] = []
    real_compile = torch.compile

    def spy(model: torch.nn.Module, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return real_compile(model, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    torch._dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    ctx, model = prepared(one_batch_cfg({"compile": True}, device="cuda"))
    reporter = ListReporter()
    fit(ctx, model, reporter)
    _finite_loss(reporter)
    assert calls == [{"backend": "inductor"}] or calls == [{}], calls
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo captured and compiled a graph
    torch._dynamo.reset()
