"""The fit loop every trainable shares: train and evaluate each epoch, checkpoint, report.

`fit(ctx, model, reporter, facts=..., tables=...)` prepares model, optimizer and loaders through
Accelerate, steps timm's schedule per optimizer update, and sends one epoch report per epoch
(`trainables.loop.reporting`): the per-trial `facts` and `tables` are handed to the reporter,
which sends them once, with the next report. With checkpoints on, every report carries one
(weights + optimizer and schedule state), and a trial restored by Ray resumes after its last
checkpointed epoch.

Out of memory is data: the batch size, the phase and the device's memory when it struck (`oom/*`,
`trainables.loop.auto_batch.oom_recorded`) go to the trial-end report, with any facts not yet
sent, and the error is raised again with them in its message.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from profilers.memory import max_over_workers
from profilers.metric_registry import F, declare
from trainables.loop.auto_batch import (
    fit_batch_size,
    kept_state,
    oom_recorded,
    training_step_probe,
)
from trainables.loop.epoch import evaluate, train_one_epoch
from trainables.loop.optim import build_optimizer, build_scheduler, uses_fused
from trainables.loop.profiling import epoch_timer, profiled_region
from trainables.loop.reporting import Reporter, Tables
from trainables.loop.setup import TrialContext
from trainables.models.checkpoints import restore_train_state, save_train_state

declare(__name__, {"optim/lr": (F, "1", "learning rate at the end of the epoch")})


@dataclass
class _Prepared:
    """What the epochs run with, once Accelerate has prepared it."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_loader: Any
    val_loader: Any
    loss_fn: nn.Module
    timer: Any
    batch_size: int
    updates_per_epoch: int
    updates: int = 0

    def on_update(self) -> None:
        self.updates += 1
        if self.scheduler is not None:
            self.scheduler.step_update(num_updates=self.updates)


def fit(
    ctx: TrialContext,
    model: nn.Module,
    reporter: Reporter,
    *,
    epochs: int | None = None,
    facts: dict[str, Any] | None = None,
    tables: Tables | None = None,
) -> list[dict[str, Any]]:
    """Train `model` for `epochs` (default cfg.optim.epochs) and report each epoch.

    `facts` (per-trial figures known before training) and `tables` go with the first report.
    Returns the epoch metrics reported by this call.
    """
    epochs = ctx.cfg.optim.epochs if epochs is None else epochs
    reporter.add(facts, tables)
    with oom_recorded(ctx.device, reporter, ctx.cfg.optim.batch_size, "train"):
        run = _prepare(ctx, model, reporter, epochs, facts or {})
        start = 0
        resume = reporter.resume_checkpoint()
        if resume is not None:
            start = restore_train_state(Path(resume), run.model, run.optimizer, run.scheduler)
        run.updates = start * run.updates_per_epoch
        history = []
        for epoch in range(start + 1, epochs + 1):
            metrics = _one_epoch(ctx, run, reporter, epoch)
            history.append(metrics)
            _report(ctx, run, reporter, metrics, epoch)
        return history


def _prepare(
    ctx: TrialContext, model: nn.Module, reporter: Reporter, epochs: int, facts: dict[str, Any]
) -> _Prepared:
    """Model on its device, optimizer, the batch size, loaders, schedule and timer, prepared."""
    cfg = ctx.cfg
    model = model.to(ctx.device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    reporter.add({"env/fused_optimizer": uses_fused(optimizer)})
    batch_size = cfg.optim.batch_size
    if cfg.optim.auto_batch_size:
        with oom_recorded(ctx.device, reporter, batch_size, "auto_batch_size probe"):
            batch_size, too_big = _auto_batch_size(ctx, model, optimizer)
        reporter.add(
            {
                "optim/batch_size_used": batch_size,
                "optim/auto_batch_oom_sizes": ",".join(map(str, too_big)) or None,
            }
        )
    train_loader, val_loader = ctx.loaders(batch_size)
    model, optimizer, train_loader, val_loader = ctx.accelerator.prepare(
        model, optimizer, train_loader, val_loader
    )
    compile_options = cfg.model.compile_options()
    if compile_options is not None:
        model = torch.compile(model, **compile_options)
    batches = len(train_loader)
    if cfg.optim.max_train_batches is not None:
        batches = min(batches, cfg.optim.max_train_batches)
    updates_per_epoch = math.ceil(batches / cfg.optim.grad_accum)
    timer = epoch_timer(cfg, ctx.device, facts)
    if timer is not None:
        reporter.add(timer.facts())
    return _Prepared(
        model=model,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg, updates_per_epoch, epochs),
        train_loader=train_loader,
        val_loader=val_loader,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing),
        timer=timer,
        batch_size=batch_size,
        updates_per_epoch=updates_per_epoch,
    )


def _one_epoch(ctx: TrialContext, run: _Prepared, reporter: Reporter, epoch: int) -> dict[str, Any]:
    """Train one epoch, evaluate, and the epoch's metrics (peak memory: the largest worker's)."""
    cfg = ctx.cfg
    metrics: dict[str, Any] = {"epoch": epoch}
    with (
        oom_recorded(ctx.device, reporter, run.batch_size, "train", epoch),
        profiled_region(cfg, ctx.device, "train", metrics),
    ):
        metrics.update(
            train_one_epoch(
                run.model,
                run.train_loader,
                run.optimizer,
                ctx.accelerator,
                run.loss_fn,
                on_update=run.on_update,
                max_batches=cfg.optim.max_train_batches,
                timer=run.timer,
                channels_last=cfg.model.channels_last,
            )
        )
    with (
        oom_recorded(ctx.device, reporter, run.batch_size, "eval", epoch),
        profiled_region(cfg, ctx.device, "eval", metrics),
    ):
        metrics.update(
            evaluate(
                run.model,
                run.val_loader,
                ctx.accelerator,
                run.loss_fn,
                max_batches=cfg.optim.max_val_batches,
                channels_last=cfg.model.channels_last,
            )
        )
    metrics["optim/lr"] = run.optimizer.param_groups[0]["lr"]
    return max_over_workers(metrics, ctx.device)


def _report(
    ctx: TrialContext, run: _Prepared, reporter: Reporter, metrics: dict[str, Any], epoch: int
) -> None:
    """The epoch report, with a checkpoint when checkpoints are on."""
    if not ctx.cfg.checkpoint.enabled:
        reporter.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="lvm-ckpt-") as tmp:
        save_train_state(Path(tmp), run.model, run.optimizer, run.scheduler, epoch)
        reporter.report(metrics, checkpoint_dir=tmp)


def _auto_batch_size(
    ctx: TrialContext, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[int]]:
    """`optim.auto_batch_size`: the largest batch (halving from optim.batch_size) whose training
    step fits; model, optimizer and RNG are left as they were. Workers agree on the smallest."""
    cfg, accelerator = ctx.cfg, ctx.accelerator
    step = training_step_probe(
        model,
        optimizer,
        nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing),
        device=ctx.device,
        img_size=cfg.model.img_size,
        num_classes=ctx.data.num_classes,
        autocast=accelerator.autocast,
        backward=lambda loss: loss.backward(),
        channels_last=cfg.model.channels_last,
    )

    def agree(size: int) -> int:
        if accelerator.num_processes == 1:
            return size
        import torch.distributed as dist

        t = torch.tensor([size], device=ctx.device)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    with kept_state(model, optimizer):
        return fit_batch_size(step, cfg.optim.batch_size, device=ctx.device, agree=agree)
