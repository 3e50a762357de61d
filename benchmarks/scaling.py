"""The cost of data parallelism here: one worker on every core vs one worker per core.

Two lvmbench sweeps of one trial each, same model, data, epochs and GLOBAL batch, run side by side
through Ray Tune exactly as users run them:

- `1 worker x 2 CPUs`: `resources: {cpu: 2}`, torch on 2 threads, batch B;
- `2 workers x 1 CPU`: `resources: {workers: 2, cpu_per_worker: 1}`, a Ray Train TorchTrainer
  with DDP over gloo, torch on 1 thread per worker, batch B/2 per worker.

Ray is started with one logical CPU more than the cores so the trial's driver sliver (0.01 CPU)
fits beside two 1-CPU workers; torch threads still match the cores. The figure is
`time/samples_per_s` (every worker's samples), median over the epochs after the first (warm-up),
and the ratio two-workers / one-worker: below 1, data parallelism costs (gradient all-reduce,
two processes' overhead); above 1, one process could not use both cores well.

With 2+ CUDA devices the script also runs 1 GPU vs N GPUs (NCCL), same global batch. That path
is written but has not run here (no GPU on this machine).

    .venv/bin/python benchmarks/scaling.py [--model resnet10t] [--img-size 32] [--batch 64]
        [--epochs 3] [--rounds 1] [--cpus 2] [--no-gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from _quiet import add_force_flag, quiet_or_exit  # benchmarks/_quiet.py


def sweep_dict(args: argparse.Namespace, name: str, resources: dict[str, Any], batch: int) -> dict:
    return {
        "name": name,
        "trainable": "train",
        "model": {"name": args.model, "img_size": args.img_size},
        "dataset": {"name": "digits"},
        "optim": {"batch_size": batch, "epochs": args.epochs, "lr": 1e-3},
        "precision": "fp32",
        "device": "cuda" if resources.get("gpu") or resources.get("gpu_per_worker") else "cpu",
        "checkpoint": {"enabled": False},
        # Only the per-epoch time profiler: nothing else competes with training for the cores.
        "profilers": {"latency": None, "flops": None, "memory": None},
        "resources": resources,
    }


def run(args: argparse.Namespace, out: Path, name: str, resources: dict, batch: int) -> float:
    """Median samples/s over the epochs after the first, of one sweep."""
    from orchestrator.driver.schema import validate_sweep_dict
    from orchestrator.driver.sweep_runner import run_sweep

    sweep = validate_sweep_dict(sweep_dict(args, name, resources, batch), source=name)
    outcome = run_sweep(sweep, output=out, sweep_text=name, verbose=0)
    if outcome.errors:
        raise SystemExit(f"{name} failed: {outcome.errors}")
    status = pd.read_parquet(out / "trials").query("sweep == @name")["status"].tolist()
    if status != ["TERMINATED"]:  # e.g. stopped by Ctrl-C: Tune stops gracefully and returns
        raise SystemExit(f"{name}: trial {status}, no figure")
    epochs = pd.read_parquet(out / "epochs")
    rows = epochs[epochs["sweep"] == name].sort_values("epoch")
    speeds = rows["time/samples_per_s"].tolist()[1:] or rows["time/samples_per_s"].tolist()
    world = pd.read_parquet(out / "trials").query("sweep == @name")["dist/world_size"].iloc[-1]
    print(f"  {name:<24} world size {int(world)}  samples/s per epoch {[round(s) for s in speeds]}")
    return statistics.median(speeds)


def compare(args: argparse.Namespace, out: Path, label: str, one: dict, many: dict, n: int) -> None:
    ones, manys = [], []
    for r in range(args.rounds):
        # Alternate the order each round so drift on a shared machine hits both sides alike.
        pair = [("one", one, args.batch), ("many", many, args.batch // n)]
        for kind, resources, batch in pair if r % 2 == 0 else pair[::-1]:
            speed = run(args, out, f"{label}-{kind}-r{r}", resources, batch)
            (ones if kind == "one" else manys).append(speed)
    a, b = statistics.median(ones), statistics.median(manys)
    print(f"{label}: 1 worker {a:.0f} samples/s, {n} workers {b:.0f} samples/s, ratio {b / a:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all workers)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="pairs of runs (medians)")
    parser.add_argument("--cpus", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--no-gpu", action="store_true", help="skip 1 GPU vs N GPUs")
    add_force_flag(parser)
    args = parser.parse_args(argv)
    quiet_or_exit(args.force)

    if args.cpus < 2:
        raise SystemExit("--cpus: data parallelism over cores needs 2 or more")
    import ray
    import torch

    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{tempfile.mkdtemp()}/mlflow.db")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ray's workers import lvmbench from this checkout (as orchestrator.driver.sweep_runner.init_ray).
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    gpus = 0 if args.no_gpu else torch.cuda.device_count()
    # One logical CPU more than the cores: the trial driver's 0.01 CPU beside full workers.
    ray.init(
        num_cpus=args.cpus + 1,
        include_dashboard=False,
        logging_level="ERROR",
        log_to_driver=False,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="lvm-scaling-") as tmp:
            out = Path(tmp)
            c = args.cpus
            print(f"{args.model} at {args.img_size} px, global batch {args.batch}, digits")
            compare(
                args,
                out,
                "cpu",
                {"cpu": c},
                {"workers": c, "cpu_per_worker": 1},
                c,
            )
            if gpus >= 2:
                compare(
                    args,
                    out,
                    "gpu",
                    {"cpu": 1, "gpu": 1},
                    {"workers": gpus, "cpu_per_worker": 1, "gpu_per_worker": 1},
                    gpus,
                )
            else:
                print(f"gpu: skipped ({gpus} CUDA device(s); 1 GPU vs N GPUs needs 2 or more)")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
