"""The optimizer and learning-rate schedule of a trial, from timm's factories.

`optim.name` is any optimizer `timm.optim.create_optimizer_v2` knows; `optim.scheduler: cosine`
is timm's `CosineLRScheduler` stepped per optimizer update, with `optim.warmup_epochs` of linear
warm-up, decaying to 0 at the end of the trial's epochs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.trial_config import TrialConfig


def build_optimizer(model: nn.Module, cfg: TrialConfig) -> torch.optim.Optimizer:
    from timm.optim import create_optimizer_v2

    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("the model has no trainable parameters: nothing to optimize")
    kwargs: dict[str, Any] = {}
    if cfg.optim.name in ("sgd", "momentum", "nesterov"):
        kwargs["momentum"] = cfg.optim.momentum
    # timm skips parameters with requires_grad=False: frozen backbones and LoRA bases stay out.
    return create_optimizer_v2(
        model, opt=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **kwargs
    )


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
