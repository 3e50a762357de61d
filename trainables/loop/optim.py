"""The optimizer and learning-rate schedule of a trial, from timm's factories.

`optim.name` is any optimizer `timm.optim.create_optimizer_v2` knows; `optim.scheduler: cosine`
is timm's `CosineLRScheduler` stepped per optimizer update, with `optim.warmup_epochs` of linear
warm-up, decaying to 0 at the end of the trial's epochs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.config import TrialConfig


def build_optimizer(model: nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    """timm's optimizer for `cfg.optim`, with torch's fused kernel where there is one.

    The parameters must already be on the device they train on (the fused kernel is chosen by it).
    `uses_fused(optimizer)` says which step it got (`env/fused_optimizer`).
    """
    from timm.optim import create_optimizer_v2

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: nothing to optimize")
    kwargs: dict[str, Any] = {}
    if cfg.optim.name in ("sgd", "momentum", "nesterov"):
        kwargs["momentum"] = cfg.optim.momentum
    if fused_step(cfg.optim.name, params[0].device, cfg.optim.fused):
        # On CPU the fused AdamW step of a ResNet-18 takes 5 ms, the default for-loop 34 ms
        # (2 threads): a sixth of the training step this tool would otherwise add to every trial.
        kwargs["fused"] = True
    # timm skips parameters with requires_grad=False: frozen backbones and LoRA bases stay out.
    return create_optimizer_v2(
        model, opt=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **kwargs
    )


def fused_step(name: str, device: torch.device, wanted: bool | None) -> bool:
    """Whether optimizer `name` steps with torch's fused kernel on `device` (`optim.fused`)."""
    import inspect

    from timm.optim import get_optimizer_class

    has_kernel = "fused" in inspect.signature(get_optimizer_class(name)).parameters and (
        device.type in _fused_devices()
    )
    if wanted and not has_kernel:
        raise ValueError(
            f"optim.fused: true, but optimizer {name!r} has no fused kernel on {device.type} "
            "(torch fuses adam, adamw, sgd, momentum and nesterov on cpu, cuda, mps and xpu); "
            "use optim.fused: null (fused where available) or false"
        )
    return has_kernel if wanted is None else wanted


def plain_adamw(
    model: nn.Module, device: torch.device, lr: float = 1e-3, weight_decay: float = 0.05
) -> torch.optim.AdamW:
    """The optimizer `build_optimizer` gives for `optim.name: adamw`, written out in plain torch
    (no weight decay on norms and biases, torch's fused step wherever `device` has one), for the
    bare loops the benchmarks set beside a trial: their ratio then measures the harness, not a
    choice of kernel (on CPU the default for-loop step of a ResNet-50 costs a third of its
    training step, the fused one a few percent)."""
    params = list(model.parameters())
    return torch.optim.AdamW(
        [
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
            {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        ],
        lr=lr,
        fused=fused_step("adamw", device, None),
    )


def _fused_devices() -> list[str]:
    from torch.optim import optimizer

    # Private in torch (2.4+); the two device types every release since then fuses on otherwise.
    supported = getattr(optimizer, "_get_fused_kernels_supported_devices", None)
    return list(supported()) if supported is not None else ["cuda", "cpu"]


def uses_fused(optimizer: torch.optim.Optimizer) -> bool:
    """Whether `optimizer` (torch's, possibly wrapped by Accelerate) steps with a fused kernel."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return bool(inner.defaults.get("fused"))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrialConfig, updates_per_epoch: int, epochs: int
) -> Any:
    """timm's scheduler for `cfg.optim.scheduler` (None for `none`); call
    `step_update(num_updates)` after every optimizer update."""
    if cfg.optim.scheduler == "none":
        return None
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=cfg.optim.scheduler,
        num_epochs=epochs,
        warmup_epochs=cfg.optim.warmup_epochs,  # type: ignore[arg-type]  # fractions are fine per update
        warmup_lr=0.0,
        min_lr=0.0,
        step_on_epochs=False,
        updates_per_epoch=max(1, updates_per_epoch),
    )
    return scheduler
