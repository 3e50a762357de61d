"""The fit loop every trainable shares: train and evaluate each epoch, checkpoint, report.

`fit(ctx, model, reporter, facts=..., tables=...)` prepares model, optimizer and loaders through
Accelerate, steps timm's schedule per optimizer update, and sends one epoch report per epoch
(`trainables.loop.reporting`): the per-trial `facts` and `tables` ride once, with the first report
this process sends. With checkpoints on, every report carries one (weights + optimizer and
schedule state), and a trial restored by Ray resumes after its last checkpointed epoch.
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
    oom_facts,
    oom_message,
    training_step_probe,
    with_batch_size,
)
from trainables.loop.epoch import evaluate, train_one_epoch
from trainables.loop.optim import build_optimizer, build_scheduler, uses_fused
from trainables.loop.profiling import epoch_timer, profiled_region
from trainables.loop.reporting import Reporter, Tables
from trainables.loop.setup import TrialContext
from trainables.models.checkpoints import restore_train_state, save_train_state

declare(__name__, {"optim/lr": (F, "1", "learning rate at the end of the epoch")})


@dataclass
class _Progress:
    """Where fit is, for the record of an out-of-memory failure."""

    batch_size: int
    phase: str = "train"
    epoch: int | None = None
    facts: dict[str, Any] | None = None  # not yet reported
    tables: Tables | None = None


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

    Out of memory is data: the batch size and the device's memory when it struck (`oom/*`,
    `trainables.loop.auto_batch`) go out in a trial-end report, with any facts not yet sent, and
    the error is raised again with them in its message. In a multi-worker trial only the
    message carries them: a report from one worker alone would wait forever for the others.
    """
    progress = _Progress(ctx.cfg.optim.batch_size, facts=facts, tables=tables)
    try:
        return _fit(ctx, model, reporter, progress, epochs, epoch_offset)
    except torch.OutOfMemoryError as err:
        got = oom_facts(ctx.device, progress.batch_size, progress.phase, progress.epoch)
        if ctx.accelerator.num_processes == 1:
            reporter.report_final({**(progress.facts or {}), **got}, tables=progress.tables)
        raise type(err)(f"{oom_message(got)}\n{err}") from err


def _fit(
    ctx: TrialContext,
    model: nn.Module,
    reporter: Reporter,
    progress: _Progress,
    epochs: int | None,
    epoch_offset: int,
) -> list[dict[str, Any]]:
    facts, tables = progress.facts, progress.tables
    cfg = ctx.cfg
    epochs = cfg.optim.epochs if epochs is None else epochs
    accelerator = ctx.accelerator
    model = model.to(ctx.device)
    if cfg.model.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg)
    facts = progress.facts = {**(facts or {}), "env/fused_optimizer": uses_fused(optimizer)}
    train_loader, val_loader = ctx.train_loader, ctx.val_loader
    if cfg.optim.auto_batch_size:
        progress.phase = "auto_batch_size probe"
        used, too_big = _auto_batch_size(ctx, model, optimizer)
        train_loader = with_batch_size(train_loader, used)
        val_loader = with_batch_size(val_loader, used)
        progress.batch_size, progress.phase = used, "train"
        facts = progress.facts = {
            **facts,
            "optim/batch_size_used": used,
            "optim/auto_batch_oom_sizes": ",".join(map(str, too_big)) or None,
        }
    model, optimizer, train_loader, val_loader = accelerator.prepare(
        model, optimizer, train_loader, val_loader
    )
    compile_options = cfg.model.compile_options()
    if compile_options is not None:
        model = torch.compile(model, **compile_options)
    batches = len(train_loader)
    if cfg.optim.max_train_batches is not None:
        batches = min(batches, cfg.optim.max_train_batches)
    updates_per_epoch = math.ceil(batches / cfg.optim.grad_accum)
    scheduler = build_scheduler(optimizer, cfg, updates_per_epoch, epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    timer = epoch_timer(cfg, ctx.device, facts)
    channels_last = cfg.model.channels_last

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
    if timer is not None:
        facts = {**(facts or {}), **timer.facts()}
    pending_facts, pending_tables = progress.facts, progress.tables = facts, tables
    for local_epoch in range(start, epochs):
        epoch = epoch_offset + local_epoch + 1
        metrics: dict[str, Any] = {"epoch": epoch}
        progress.epoch, progress.phase = epoch, "train"
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
                    channels_last=channels_last,
                )
            )
        progress.phase = "eval"
        with profiled_region(cfg, ctx.device, "eval", metrics):
            metrics.update(
                evaluate(
                    model,
                    val_loader,
                    accelerator,
                    loss_fn,
                    max_batches=cfg.optim.max_val_batches,
                    channels_last=channels_last,
                )
            )
        metrics["optim/lr"] = optimizer.param_groups[0]["lr"]
        # Peak memory of a multi-worker trial: the largest worker's (a no-op in one process).
        metrics = max_over_workers(metrics, ctx.device)
        history.append(metrics)
        send = {"facts": pending_facts, "tables": pending_tables}
        if cfg.checkpoint.enabled:
            with tempfile.TemporaryDirectory(prefix="lvm-ckpt-") as tmp:
                save_train_state(Path(tmp), model, optimizer, scheduler, epoch)
                reporter.report(metrics, **send, checkpoint_dir=tmp)
        else:
            reporter.report(metrics, **send)
        pending_facts, pending_tables = progress.facts, progress.tables = None, None
    return history


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
