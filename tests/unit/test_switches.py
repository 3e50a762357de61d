"""Each speed switch takes effect: channels_last inputs and weights, the autocast dtype, gradient
accumulation, torch.compile's options, the attention kernel, loader options, the measured MFU peak
and the trial-end report every trainable ends with."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tests.trial_helpers import prepared
from trainables.config import DatasetConfig, ModelConfig, TrialConfig
from trainables.data.loaders import make_loader
from trainables.loop.epoch import train_one_epoch
from trainables.loop.fit import fit
from trainables.loop.optim import build_optimizer, uses_fused
from trainables.loop.profiling import epoch_timer, static_profile
from trainables.loop.reporting import ListReporter
from trainables.loop.scope import TrialClock, fresh_start, scoped
from trainables.models.create import create_model

CPU = torch.device("cpu")
PROFILERS_OFF = {"latency": False, "flops": False, "memory": False, "params": False}


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    # As a reused Ray worker does before each trial: Accelerate's precision is per process, and
    # tests after these must not inherit bf16.
    fresh_start()
    yield
    fresh_start()


def one_batch_cfg(model: dict[str, Any] | None = None, **top: Any) -> TrialConfig:
    return TrialConfig.model_validate(
        {
            "model": {"name": "resnet10t", "img_size": 16, **(model or {})},
            "dataset": {"name": "digits", "subset": 32},
            "optim": {"batch_size": 8, "epochs": 1, "max_train_batches": 1, "max_val_batches": 1},
            "precision": "fp32",
            "profilers": PROFILERS_OFF,
            "checkpoint": {"enabled": False},
            **top,
        }
    )


def first_conv(model: nn.Module) -> nn.Conv2d:
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def record_first_conv(model: nn.Module) -> list[dict[str, Any]]:
    """What the first convolution sees on each call: input and weight layout, autocast state."""
    seen: list[dict[str, Any]] = []
    conv = first_conv(model)

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        seen.append(
            {
                "input_cl": args[0].is_contiguous(memory_format=torch.channels_last),
                "input_nchw": args[0].is_contiguous(),
                "weight_cl": module.weight.is_contiguous(memory_format=torch.channels_last),
                "autocast": torch.is_autocast_enabled("cpu"),
                "autocast_dtype": torch.get_autocast_dtype("cpu"),
            }
        )

    conv.register_forward_pre_hook(hook)
    return seen


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_reaches_inputs_and_weights(channels_last: bool) -> None:
    ctx, model = prepared(one_batch_cfg({"channels_last": channels_last}))
    seen = record_first_conv(model)
    fit(ctx, model, ListReporter())
    assert len(seen) == 2  # one training batch, one evaluation batch
    # A 16 px image with 3 channels is contiguous in both layouts only when it is trivial; here
    # the layouts differ, so exactly one of them holds.
    assert all(s["input_cl"] is channels_last for s in seen)
    assert all(s["input_nchw"] is not channels_last for s in seen)
    assert all(s["weight_cl"] is channels_last for s in seen)


def test_bf16_precision_runs_the_forward_under_bf16_autocast() -> None:
    ctx, model = prepared(one_batch_cfg(precision="bf16"))
    seen = record_first_conv(model)
    fit(ctx, model, ListReporter())
    assert seen and all(s["autocast"] for s in seen)
    assert {s["autocast_dtype"] for s in seen} == {torch.bfloat16}


def test_fp32_precision_runs_without_autocast() -> None:
    ctx, model = prepared(one_batch_cfg())
    seen = record_first_conv(model)
    fit(ctx, model, ListReporter())
    assert seen and not any(s["autocast"] for s in seen)


def _sgd_update(batch_size: int, grad_accum: int) -> torch.Tensor:
    """The weights of a tiny linear model after one epoch over the same 8 samples."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 2, 2, generator=gen)
    y = torch.randint(0, 3, (8,), generator=gen)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(3, 12, generator=gen))
        model[1].bias.zero_()
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=grad_accum)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    updates = []
    train_one_epoch(
        model,
        loader,
        optimizer,
        accelerator,
        nn.CrossEntropyLoss(),
        on_update=lambda: updates.append(1),
    )
    assert len(updates) == 8 // (batch_size * grad_accum)
    return accelerator.unwrap_model(model)[1].weight.detach().clone()


def test_grad_accum_matches_a_k_times_larger_batch() -> None:
    big = _sgd_update(batch_size=8, grad_accum=1)
    accumulated = _sgd_update(batch_size=2, grad_accum=4)
    unaccumulated = _sgd_update(batch_size=2, grad_accum=1)  # four updates: a different result
    start = _start_weights()
    assert not torch.allclose(big, start)
    torch.testing.assert_close(accumulated, big, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(unaccumulated, big, atol=1e-3)


def _start_weights() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    torch.randn(8, 3, 2, 2, generator=gen)
    torch.randint(0, 3, (8,), generator=gen)
    return torch.randn(3, 12, generator=gen)


def test_compile_options_reach_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []

    def fake_compile(model: nn.Module, **kwargs: Any) -> nn.Module:
        calls.append(kwargs)
        return model  # run eagerly: the test is about what reaches torch.compile

    monkeypatch.setattr(torch, "compile", fake_compile)
    cfg = one_batch_cfg({"compile": {"mode": "reduce-overhead"}})
    ctx, model = prepared(cfg)
    fit(ctx, model, ListReporter())
    assert calls == [{"mode": "reduce-overhead", "backend": "inductor"}]
    assert ModelConfig(compile=True).compile_options() == {}
    assert ModelConfig(compile=False).compile_options() is None


def test_compile_rejects_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        ModelConfig(compile={"mode": "fastest"})


TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "img_size": 16,
    "kwargs": {"depth": 2, "patch_size": 8, "embed_dim": 32, "num_heads": 2},
}


@pytest.mark.parametrize(("attention", "fused"), [("plain", False), ("fused", True)])
def test_attention_switch_sets_every_timm_attention_module(attention: str, fused: bool) -> None:
    model = create_model(ModelConfig(**TINY_VIT, attention=attention), 10)
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert len(flags) == 2 and all(f is fused for f in flags)
    cfg = TrialConfig.model_validate(
        {"model": {**TINY_VIT, "attention": attention}, "profilers": PROFILERS_OFF}
    )
    facts, _ = static_profile(model, cfg, CPU)
    assert facts["env/attention"] == attention
    assert facts["env/fused_attn"] == ("2/2" if fused else "0/2")


def test_attention_switch_on_a_cnn_is_recorded_as_no_effect() -> None:
    cfg = one_batch_cfg({"attention": "plain"})
    model = create_model(cfg.model, 10)
    facts, _ = static_profile(model, cfg, CPU)
    assert facts["env/attention"].startswith("plain (no effect")
    assert facts["env/fused_attn"] == "none"


def test_switches_are_recorded_as_env_facts() -> None:
    cfg = one_batch_cfg(
        {"compile": {"mode": "max-autotune", "backend": "eager"}},
        optim={"grad_accum": 4},
        dataset={"name": "digits", "num_workers": 2, "pin_memory": True, "prefetch_factor": 3},
    )
    facts, _ = static_profile(create_model(cfg.model, 10), cfg, CPU)
    assert facts["env/compile"] is True
    assert facts["env/compile_mode"] == "max-autotune/eager"
    assert facts["env/grad_accum"] == 4
    assert (facts["env/num_workers"], facts["env/pin_memory"]) == (2, True)
    assert (facts["env/prefetch_factor"], facts["env/persistent_workers"]) == (3, True)
    assert facts["env/on_device"] is False


def _fused_flag(name: str, fused: bool | None) -> bool:
    cfg = TrialConfig.model_validate({"optim": {"name": name, "fused": fused}})
    return uses_fused(build_optimizer(nn.Linear(4, 2), cfg))


def test_fused_optimizer_step_is_the_default_where_torch_has_one() -> None:
    assert _fused_flag("adamw", None) is True
    assert _fused_flag("sgd", None) is True
    assert _fused_flag("adamw", False) is False
    assert _fused_flag("lamb", None) is False  # timm's own optimizer: no fused kernel
    with pytest.raises(ValueError, match=r"optim.fused: true.*'lamb'"):
        _fused_flag("lamb", True)


def test_fused_optimizer_is_recorded_and_steps_like_the_default() -> None:
    got = {}
    for fused in (False, None):
        cfg = one_batch_cfg(optim={"batch_size": 8, "epochs": 1, "fused": fused})
        ctx, model = prepared(cfg)
        reporter = ListReporter()
        fit(ctx, model, reporter)
        got[fused] = (reporter.facts["env/fused_optimizer"], reporter.reports[0]["val/loss"])
    assert got[False][0] is False and got[None][0] is True
    # Same seed, same data: after the fused kernel's AdamW update the model scores the same.
    assert got[None][1] == pytest.approx(got[False][1], rel=1e-4)


def test_loader_options_reach_the_dataloader() -> None:
    data = TensorDataset(torch.zeros(4, 1), torch.zeros(4))
    cfg = DatasetConfig(num_workers=1, prefetch_factor=3, persistent_workers=False)
    loader = make_loader(data, 2, shuffle=False, cfg=cfg)
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (1, 3, False)
    with pytest.raises(ValueError, match="prefetch_factor"):
        DatasetConfig(prefetch_factor=2)


def test_cpu_mfu_peak_is_measured_by_default() -> None:
    cfg = one_batch_cfg()
    cfg.profilers.time = {"peak_tflops": None}  # type: ignore[assignment]
    timer = epoch_timer(cfg, CPU, {"flops/train_step_gflops": 0.5})
    assert timer is not None
    facts = timer.facts()
    assert facts["time/peak_source"] == "measured"
    assert facts["time/peak_tflops"] is not None and facts["time/peak_tflops"] > 0
    # Without the model's FLOPs there is no MFU: the probe is not run, a configured peak is kept.
    unmeasured = epoch_timer(cfg, CPU, {})
    assert unmeasured is not None and unmeasured.facts()["time/peak_tflops"] is None
    configured = one_batch_cfg(profilers={**PROFILERS_OFF, "time": {"peak_tflops": 2.0}})
    timer = epoch_timer(configured, CPU, {})
    assert timer is not None
    assert timer.facts() == {"time/peak_tflops": 2.0, "time/peak_source": "configured"}


def test_trial_clock_sends_one_trial_end_report_with_the_totals() -> None:
    def trainable(config: dict[str, Any], reporter: Any) -> None:
        reporter.report({"epoch": 1, "time/epoch_s": 1.5})
        reporter.report({"epoch": 2, "time/epoch_s": 2.0})
        reporter.report_final({"merged/x": 1.0}, tables={"latency": [{"a": 1}]})
        reporter.report_final({"recovered/y": 2.0})

    reporter = ListReporter()
    scoped(trainable)({}, reporter)
    assert reporter.finals == 1
    assert reporter.final["merged/x"] == 1.0 and reporter.final["recovered/y"] == 2.0
    assert reporter.final["time/train_total_s"] == pytest.approx(3.5)
    assert reporter.final["time/total_s"] >= 0
    assert reporter.tables["latency"] == [{"a": 1}]


def test_trial_clock_without_epoch_times_leaves_train_total_null() -> None:
    reporter = ListReporter()
    clock = TrialClock(reporter)
    clock.report({"epoch": 0})
    clock.finish()
    assert reporter.final["time/train_total_s"] is None
    assert reporter.final["time/total_s"] is not None


def test_speedups_pair_each_tuned_trial_with_its_baseline() -> None:
    import pandas as pd

    from orchestrator.report.speedups import speedup_rows

    def trial(stage: str, model: str, epoch_s: float, acc: float, mem: float) -> dict[str, Any]:
        return {
            "stage": stage,
            "model.name": model,
            "dataset.name": "cifar10",
            "time/epoch_s": epoch_s,
            "time/total_s": 2 * epoch_s,
            "best/val/acc": acc,
            "best/val/f1_macro": acc,
            "peak memory (MiB)": mem,
        }

    view = pd.DataFrame(
        [
            trial("baseline-cifar10", "resnet50", 10.0, 0.90, 1000.0),
            trial("baseline-cifar10", "vit", 20.0, 0.95, 2000.0),
            trial("amp-cifar10", "resnet50", 5.0, 0.91, 600.0),
            trial("amp-cifar10", "vit", 8.0, 0.94, 1000.0),
        ]
    )
    rows = {r["model.name"]: r for r in speedup_rows(view)}
    assert set(rows) == {"resnet50", "vit"}
    assert rows["resnet50"]["epoch time ratio"] == pytest.approx(0.5)
    assert rows["resnet50"]["total time ratio"] == pytest.approx(0.5)
    assert rows["resnet50"]["accuracy diff (points)"] == pytest.approx(1.0)
    assert rows["vit"]["memory ratio"] == pytest.approx(0.5)
    assert rows["vit"]["baseline stage"] == "baseline-cifar10"
    assert speedup_rows(view[view["stage"] != "amp-cifar10"]) == []


def test_isolation_is_a_sweep_option() -> None:
    from orchestrator.driver.schema import SweepError, validate_sweep_dict

    assert validate_sweep_dict({"name": "s"}).isolation == "reuse"
    assert validate_sweep_dict({"name": "s", "isolation": "process"}).isolation == "process"
    with pytest.raises(SweepError, match="isolation"):
        validate_sweep_dict({"name": "s", "isolation": "thread"})
