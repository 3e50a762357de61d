"""Overhead of the per-epoch profilers: epoch time with them all on / with them all off, one run.

"On" is what `fit` runs: the StepTimer (CUDA events or host clock, data wait, MFU inputs, the
device lock taken shared per step), peak-memory regions around the training epoch and evaluation,
and the shared device hold around evaluation. "Off" is the same epoch loop with none of them.
Epochs alternate off/on/on/off (ABBA) after a warm-up epoch, so drift (thermal, a neighbour on
the machine) hits both sides alike; the figure is median(on) / median(off) over those epochs (the
per-pair ratios are printed too, to show the spread). Target: < 1.03.

On a machine shared with other work the epoch ratio is as noisy as the machine (a pair can read
0.8 or 1.4); the script therefore also prints the process CPU-time ratio and the profilers' own
cost, timed directly (per step and per epoch), with the overhead that cost implies. That last
figure does not depend on the neighbours.

    .venv/bin/python benchmarks/profiler_overhead.py [--model resnet18] [--img-size 32]
        [--batch-size 64] [--rounds 3] [--device auto] [--subset N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _quiet import add_force_flag, quiet_or_exit  # benchmarks/_quiet.py
from torch import nn

from profilers.step_timer import synchronize
from trainables.config import TrialConfig
from trainables.loop.epoch import evaluate, train_one_epoch
from trainables.loop.optim import build_optimizer
from trainables.loop.profiling import epoch_timer, profiled_region, static_profile
from trainables.loop.setup import TrialSetup
from trainables.models.create import create_model


def run_epoch(
    ctx: Any, model: nn.Module, optimizer: Any, loss_fn: nn.Module, timer: Any
) -> tuple[float, float]:
    """Wall and process-CPU seconds of one training epoch plus evaluation, profilers on when
    `timer` is given."""
    cfg, device, acc = ctx.cfg, ctx.device, ctx.accelerator
    metrics: dict[str, Any] = {}
    synchronize(device)
    t0, c0 = time.perf_counter(), time.process_time()
    if timer is None:
        train_one_epoch(model, ctx.train_loader, optimizer, acc, loss_fn)
        evaluate(model, ctx.val_loader, acc, loss_fn)
    else:
        with profiled_region(cfg, device, "train", metrics):
            train_one_epoch(model, ctx.train_loader, optimizer, acc, loss_fn, timer=timer)
        with profiled_region(cfg, device, "eval", metrics):
            evaluate(model, ctx.val_loader, acc, loss_fn)
    synchronize(device)
    return time.perf_counter() - t0, time.process_time() - c0


def profiler_cost(ctx: Any, timer: Any, steps: int = 2000) -> tuple[float, float]:
    """Seconds the profilers add per step (StepTimer, device lock) and per epoch (memory regions,
    eval hold, epoch start/end), timed on their own."""
    cfg, device = ctx.cfg, ctx.device
    timer.start_epoch()
    t0 = time.perf_counter()
    for _ in range(steps):
        timer.batch_ready()
        timer.step_done(1)
    per_step = (time.perf_counter() - t0) / steps
    timer.end_epoch()
    rounds = 50
    t0 = time.perf_counter()
    for _ in range(rounds):
        metrics: dict[str, Any] = {}
        with profiled_region(cfg, device, "train", metrics):
            timer.start_epoch()
            timer.end_epoch()
        with profiled_region(cfg, device, "eval", metrics):
            pass
    per_epoch = (time.perf_counter() - t0) / rounds
    return per_step, per_epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--img-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3, help="ABBA rounds (2 epochs each side)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--subset", type=int, default=None, help="cap samples per split")
    add_force_flag(ap)
    args = ap.parse_args()
    quiet_or_exit(args.force)

    cfg = TrialConfig.model_validate(
        {
            "model": {"name": args.model, "img_size": args.img_size},
            "dataset": {"name": "digits", "subset": args.subset},
            "optim": {"batch_size": args.batch_size, "scheduler": "none"},
            "device": args.device,
            "profilers": {"latency": False},
        }
    )
    setup = TrialSetup.begin(cfg)
    model = create_model(cfg.model, setup.num_classes)
    ctx = setup.with_model(model)
    static, _ = static_profile(model, cfg, ctx.device)  # FLOPs for the timer's MFU
    optimizer = build_optimizer(model, cfg)
    model, optimizer, ctx.train_loader, ctx.val_loader = ctx.accelerator.prepare(
        model, optimizer, ctx.train_loader, ctx.val_loader
    )
    loss_fn = nn.CrossEntropyLoss()
    timer = epoch_timer(cfg, ctx.device, static)

    run_epoch(ctx, model, optimizer, loss_fn, timer)  # warm-up: allocator, caches, lazy init
    off: list[tuple[float, float]] = []
    on: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        for side in ("off", "on", "on", "off"):
            t = run_epoch(ctx, model, optimizer, loss_fn, timer if side == "on" else None)
            (on if side == "on" else off).append(t)
    pairs = [a[0] / b[0] for a, b in zip(on, off, strict=True)]
    cpu_pairs = [a[1] / b[1] for a, b in zip(on, off, strict=True)]
    off_s = statistics.median(t[0] for t in off)
    steps = len(ctx.train_loader)
    per_step, per_epoch = profiler_cost(ctx, timer)
    implied = 1 + (per_step * steps + per_epoch) / off_s
    print(
        f"model {args.model} @ {args.img_size}px, batch {args.batch_size}, device {ctx.device}, "
        f"{steps} steps/epoch; epoch + eval off: median {off_s:.3f} s, "
        f"on: median {statistics.median(t[0] for t in on):.3f} s"
    )
    print(f"per-pair on/off (wall): {', '.join(f'{p:.3f}' for p in pairs)}")
    print(f"per-pair on/off (process CPU time): {', '.join(f'{p:.3f}' for p in cpu_pairs)}")
    print(
        f"profilers' own cost: {per_step * 1e6:.1f} us per step, {per_epoch * 1e3:.2f} ms per "
        f"epoch -> implied ratio {implied:.5f}"
    )
    on_s = statistics.median(t[0] for t in on)
    print(
        f"profiler overhead ratio (median on / median off over {len(on)} epochs each): "
        f"{on_s / off_s:.3f} (target < 1.03)"
    )


if __name__ == "__main__":
    main()
