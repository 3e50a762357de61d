"""What every trainable shares around the epoch loop: set-up, the fit loop, checkpoints, reporting.

A trainable is `run(config: dict, reporter: Reporter) -> None`. Under Ray the reporter is
`trainables.reporting.TuneReporter` (tune.report + tune.Checkpoint); in tests it is `ListReporter`.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader

from trainables.checkpoints import CHECKPOINT_FILE, load_weights, save_model
from trainables.data import DataBundle, build_data, make_loader
from trainables.epoch_loop import evaluate, train_one_epoch
from trainables.profiling import epoch_timer, profiled_region
from trainables.trial_config import TrialConfig

STATE_FILE = "train_state.pt"


class Reporter(Protocol):
    def report(
        self,
        metrics: dict[str, Any],
        *,
        tables: dict[str, list[dict[str, Any]]] | None = None,
        checkpoint_dir: str | None = None,
    ) -> None: ...

    def resume_checkpoint(self) -> str | None: ...


@dataclass
class ListReporter:
    """Keeps every report in memory: runs a trainable without Ray (tests, notebooks)."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)
    resume_from: str | None = None
    keep_dir: Path | None = None

    def report(
        self,
        metrics: dict[str, Any],
        *,
        tables: dict[str, list[dict[str, Any]]] | None = None,
        checkpoint_dir: str | None = None,
    ) -> None:
        self.reports.append(dict(metrics))
        for name, rows in (tables or {}).items():
            self.tables.setdefault(name, []).extend(rows)
        if checkpoint_dir is not None and self.keep_dir is not None:
            import shutil

            dest = self.keep_dir / f"checkpoint_{len(self.reports):04d}"
            shutil.copytree(checkpoint_dir, dest)
            self.checkpoints.append(str(dest))

    def resume_checkpoint(self) -> str | None:
        return self.resume_from


@dataclass
class TrialContext:
    cfg: TrialConfig
    accelerator: Accelerator
    data: DataBundle
    train_loader: DataLoader
    val_loader: DataLoader

    @property
    def device(self) -> torch.device:
        return self.accelerator.device


def resolve_precision(precision: str, device: torch.device) -> str:
    """Accelerate's mixed_precision for our precision: `auto` is bf16 on capable CUDA, else fp32.

    On CPU, bf16 matmul is ~100x slower than fp32 here, so auto never picks it there.
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision: fp16 needs a CUDA device, this trial runs on {device.type}; "
            "use fp32, bf16 or auto"
        )
    return {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device: cuda was asked for but torch sees no CUDA device; use auto or cpu"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device: mps was asked for but is not available; use auto or cpu")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def prepare(cfg: TrialConfig) -> TrialContext:
    """Seed, pick device and precision, build data and loaders for one trial."""
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    accelerator = Accelerator(
        cpu=device.type == "cpu",
        mixed_precision=resolve_precision(cfg.precision, device),
        gradient_accumulation_steps=cfg.optim.grad_accum,
    )
    data = build_data(cfg.dataset, cfg.model.img_size, seed=cfg.seed)
    train_loader = make_loader(
        data.train, cfg.optim.batch_size, shuffle=True, cfg=cfg.dataset, seed=cfg.seed
    )
    val_loader = make_loader(data.val, cfg.optim.batch_size, shuffle=False, cfg=cfg.dataset)
    return TrialContext(cfg, accelerator, data, train_loader, val_loader)


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
    optimizer: torch.optim.Optimizer, cfg: TrialConfig, steps_per_epoch: int, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler | None:
    if cfg.optim.scheduler == "none":
        return None
    total = max(1, steps_per_epoch * epochs)
    warmup = round(cfg.optim.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fit(
    ctx: TrialContext,
    model: nn.Module,
    reporter: Reporter,
    *,
    epochs: int | None = None,
    static_metrics: dict[str, Any] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    epoch_offset: int = 0,
) -> list[dict[str, Any]]:
    """Train `model` for `epochs` (default cfg.optim.epochs) and report each epoch.

    Each report carries the epoch's metrics merged with `static_metrics`; `tables` go with the first
    report. With checkpoints on, every epoch's report carries a checkpoint (model + optimizer
    state); a trial restored by Ray resumes after its last checkpointed epoch.
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
    scheduler = build_scheduler(optimizer, cfg, math.ceil(batches / cfg.optim.grad_accum), epochs)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing)
    timer = epoch_timer(cfg, ctx.device, static_metrics)

    start = 0
    resume = reporter.resume_checkpoint()
    if resume is not None:
        start = _restore(Path(resume), model, optimizer, scheduler) - epoch_offset

    history: list[dict[str, Any]] = []
    pending_tables = tables
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
                    scheduler=scheduler,
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
        metrics.update(static_metrics or {})
        history.append(metrics)
        if cfg.checkpoint.enabled:
            with tempfile.TemporaryDirectory(prefix="lvm-ckpt-") as tmp:
                _checkpoint(Path(tmp), model, optimizer, scheduler, epoch)
                reporter.report(metrics, tables=pending_tables, checkpoint_dir=tmp)
        else:
            reporter.report(metrics, tables=pending_tables)
        pending_tables = None
    return history


def _checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    save_model(model, directory)  # safetensors; tied weights stored once each
    state = {"epoch": epoch, "optimizer": optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    torch.save(state, directory / STATE_FILE)


def _restore(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> int:
    """Load a checkpoint written by `_checkpoint`; returns the epoch it was taken after."""
    load_weights(model, directory / CHECKPOINT_FILE)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])
