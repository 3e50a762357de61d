"""The fit loop every trainable shares: train and evaluate each epoch, checkpoint, report.

`fit(ctx, model, reporter, facts=..., tables=...)` prepares model, optimizer and loaders through
Accelerate, steps timm's schedule per optimizer update, and sends one epoch report per epoch
(`trainables.reporting`): the per-trial `facts` and `tables` ride once, with the first report
this process sends. With checkpoints on, every report carries one (weights + optimizer and
schedule state), and a trial restored by Ray resumes after its last checkpointed epoch.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from profilers.metric_registry import F, declare
from trainables.checkpoints import restore_train_state, save_train_state
from trainables.epoch_loop import evaluate, train_one_epoch
from trainables.optim import build_optimizer, build_scheduler
from trainables.profiling import epoch_timer, profiled_region
from trainables.reporting import Reporter, Tables
from trainables.trial_setup import TrialContext

declare(__name__, {"optim/lr": (F, "1", "learning rate at the end of the epoch")})


def fit(
    ctx: TrialContext,
    model: nn.Module,
    reporter: Reporter,
    *,
    epochs: int | None = None,
    facts: dict[str, Any] | None = None,
    tables: Tables | None = None,
    epoch_offset: int = 0,
) -> list[dict[str, Any]]:
    """Train `model` for `epochs` (default cfg.optim.epochs) and report each epoch.

    `facts` (per-trial figures known before training) and `tables` go with the first report;
    `epoch_offset` numbers epochs after earlier ones (prune_recover's epoch 0). Returns the
    epoch metrics reported by this call.
    """
    cfg = ctx.cfg
    epochs = cfg.optim.epochs if epochs is None else epochs
    accelerator = ctx.accelerator
    model = model.to(ctx.device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, ctx.train_loader, ctx.val_loader
    )
    if cfg.model.compile:
        model = torch.compile(model)
    batches = len(train_loader)
    if cfg.optim.max_train_batches is not None:
        batches = min(batches, cfg.optim.max_train_batches)
    updates_per_epoch = math.ceil(batches / cfg.optim.grad_accum)
    scheduler = build_scheduler(optimizer, cfg, updates_per_epoch, epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    timer = epoch_timer(cfg, ctx.device, facts)

    start = 0
    resume = reporter.resume_checkpoint()
    if resume is not None:
        start = restore_train_state(Path(resume), model, optimizer, scheduler) - epoch_offset
    updates = start * updates_per_epoch

    def on_update() -> None:
        nonlocal updates
        updates += 1
        if scheduler is not None:
            scheduler.step_update(num_updates=updates)

    history: list[dict[str, Any]] = []
    pending_facts, pending_tables = facts, tables
    for local_epoch in range(start, epochs):
        epoch = epoch_offset + local_epoch + 1
        metrics: dict[str, Any] = {"epoch": epoch}
        with profiled_region(cfg, ctx.device, "train", metrics):
            metrics.update(
                train_one_epoch(
                    model,
                    train_loader,
                    optimizer,
                    accelerator,
                    loss_fn,
                    on_update=on_update,
                    max_batches=cfg.optim.max_train_batches,
                    timer=timer,
                )
            )
        with profiled_region(cfg, ctx.device, "eval", metrics):
            metrics.update(
                evaluate(
                    model, val_loader, accelerator, loss_fn, max_batches=cfg.optim.max_val_batches
                )
            )
        metrics["optim/lr"] = optimizer.param_groups[0]["lr"]
        history.append(metrics)
        send = {"facts": pending_facts, "tables": pending_tables}
        if cfg.checkpoint.enabled:
            with tempfile.TemporaryDirectory(prefix="lvm-ckpt-") as tmp:
                save_train_state(Path(tmp), model, optimizer, scheduler, epoch)
                reporter.report(metrics, **send, checkpoint_dir=tmp)
        else:
            reporter.report(metrics, **send)
        pending_facts, pending_tables = None, None
    return history
