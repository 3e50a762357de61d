"""Does the latency profiler agree with `torch.utils.benchmark`? Alone, beside a training trial,
and in a trial of a real sweep (`python -m orchestrator`).

For each model (default ResNet-50 and ViT-B/16, batch 1, 224 px, fp32, random weights, a 10-class
head as the sweep's trials have), with the same torch thread count on both sides:

- `profiler`: `profilers.latency.measure_latency` as a trial runs it (10 warm-ups, 30 repeats,
  its time budget, inside the device's exclusive window), the median forward;
- `reference`: `torch.utils.benchmark.Timer(...).blocked_autorange()` on the same model and input
  under `torch.inference_mode()`, its median.

Cases, each printed as the median of the per-round ratios profiler / reference with their spread:

1. **alone**, in this process: each round times both sides back to back, ABAB (the profiler first
   in even rounds, the reference first in odd ones), so drift and order effects hit both sides.
   Target: within 5% (0.95-1.05).
2. **beside a trial**: a second lvmbench trial trains on this node (`python -m orchestrator trial`
   in a subprocess, sharing the device lock directory), the case the exclusive window
   (`profilers.device_lock`) is for: its steps pause while the profiler holds the window. Each
   round: the profiler beside it, then the reference inside the same window (ABAB again); the
   ratio is profiler / reference alone (what a user compares with). Target: within 10%.
3. **through `python -m orchestrator`**: a real sweep, one trial per model, run as a subprocess
   (`max_concurrent_trials: 1`: each trial alone), its `latency` table read back; rounds alternate
   sweep / reference (ABAB), the ratio is the trial's p50 over the reference of the same round.
   Then the same sweep beside the training trial of case 2. Targets: 5% alone, 10% beside.

Every row also prints the points' `cv` and `cpu_share` (`profilers/latency.py`): a cpu_share well
below 1 says the timing thread waited for a core, i.e. the machine was busy. The load average is
printed first; the script refuses to measure on a busy machine (1-minute load above half the
cores, exit 3) unless `--force`, and exits 1 when a figure misses its target.

    .venv/bin/python benchmarks/latency_agreement.py [--models resnet50 vit_base_patch16_224]
        [--img-size 224] [--threads 1] [--rounds 4] [--sweep-rounds 2] [--no-contended]
        [--no-sweep] [--smoke] [--force]

Output (one line per case and model; the figure is the median):

    machine: load average 0.05, 0.20, 0.30 on 2 cores
    alone        resnet50: median 1.004 (spread over 4 rounds: 0.99-1.01, ...; target 0.95-1.05) ok
    beside trial resnet50: median 1.03 (...; target 0.90-1.10) ok
    sweep alone  resnet50: ...
    sweep beside resnet50: ...
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

from _quiet import add_force_flag, load_line, quiet_or_exit, ratio_line

ROOT = Path(__file__).resolve().parent.parent
NUM_CLASSES = 10
WARMUP, REPEATS = 10, 30
# The second trial: a small model training on synthetic data until it is stopped; its steps take
# the device lock shared (the time profiler's StepTimer), as every lvmbench trial's do.
NEIGHBOUR_SWEEP = """
name: neighbour
trainable: train
model: {name: resnet18, img_size: 64}
dataset: {name: synthetic, num_samples: 256, num_classes: 10}
optim: {batch_size: 16, epochs: 10000, scheduler: none}
precision: fp32
device: cpu
checkpoint: {enabled: false}
profilers: {latency: false, flops: false, memory: false}
resources: {cpu: 1}
"""
# One one-batch trial per model, one at a time, with the latency profiler as the comparison runs it.
AGREE_SWEEP = """
name: {name}
trainable: train
model: {{name: {first}, img_size: {img}}}
dataset: {{name: synthetic, num_samples: 8, num_classes: {classes}}}
optim: {{batch_size: 2, epochs: 1, max_train_batches: 1, max_val_batches: 1}}
precision: fp32
device: cpu
checkpoint: {{enabled: false}}
profilers: {{latency: {{input_sizes: [{img}], batch_sizes: [1], warmup: {warmup}, repeats: {repeats}}}}}
resources: {{cpu: {threads}}}
max_concurrent_trials: 1
search: {{model.name: {{grid: [{models}]}}}}
"""


def reference_ms(model: Any, x: Any, threads: int, window: Any = None) -> float:
    """torch.utils.benchmark's median forward, in ms (inside `window` when given)."""
    import torch
    from torch.utils import benchmark

    def forward() -> Any:
        with torch.inference_mode():
            return model(x)

    for _ in range(3):
        forward()
    timer = benchmark.Timer(stmt="forward()", globals={"forward": forward}, num_threads=threads)
    with window if window is not None else contextlib.nullcontext():
        measured = timer.blocked_autorange(min_run_time=2.0)
    return measured.median * 1e3


def profiler_row(model: Any, img: int) -> dict[str, Any]:
    """The latency profiler's batch-1 row, as a trial measures it."""
    from profilers.latency import measure_latency

    row = measure_latency(
        model,
        "cpu",
        input_sizes=[img],
        batch_sizes=[1],
        warmup=WARMUP,
        repeats=REPEATS,
        exclusive=True,
    )[0]
    if row["status"] != "ok":
        raise RuntimeError(f"latency point failed: {row['error']}")
    return row


def in_process(
    model: Any, img: int, threads: int, rounds: int, alone_ref: float | None
) -> dict[str, Any]:
    """Per-round ratios profiler / reference, ABAB. Beside a trial (`alone_ref` given) the
    reference runs inside the exclusive window and the ratio is taken to `alone_ref`."""
    import torch

    from profilers.device_lock import lock_for

    x = torch.randn(1, 3, img, img)
    ratios, rows, refs = [], [], []
    for i in range(rounds):
        window = lock_for("cpu").exclusive() if alone_ref is not None else None
        if i % 2:
            ref = reference_ms(model, x, threads, window)
            row = profiler_row(model, img)
        else:
            row = profiler_row(model, img)
            ref = reference_ms(model, x, threads, window)
        rows.append(row)
        refs.append(ref)
        ratios.append(row["latency_ms_p50"] / (alone_ref if alone_ref is not None else ref))
    return {"ratios": ratios, "rows": rows, "reference_ms": statistics.median(refs)}


def run_sweep(work: Path, name: str, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """One real sweep (a subprocess), one trial per model; its batch-1 latency rows by model."""
    import pandas as pd

    sweep = work / f"{name}.yaml"
    sweep.write_text(
        AGREE_SWEEP.format(
            name=name,
            first=args.models[0],
            img=args.img_size,
            classes=NUM_CLASSES,
            warmup=WARMUP,
            repeats=REPEATS,
            threads=args.threads,
            models=", ".join(args.models),
        )
    )
    out = work / f"out-{name}"
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", str(sweep), "--output", str(out), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"},
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    lat = pd.read_parquet(out / "latency")
    lat = lat[(lat["batch_size"] == 1) & (lat["status"] == "ok")]
    return {str(r["model.name"]): r.to_dict() for _, r in lat.iterrows()}


def through_sweep(
    models: dict[str, Any],
    work: Path,
    args: argparse.Namespace,
    tag: str,
    alone_refs: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """Rounds of sweep / reference (ABAB); per model the ratios trial p50 / reference. Beside a
    trial (`alone_refs` given) the ratios are to the references measured alone."""
    import torch

    x = torch.randn(1, 3, args.img_size, args.img_size)
    got: dict[str, dict[str, Any]] = {n: {"ratios": [], "rows": []} for n in models}
    for i in range(args.sweep_rounds):
        refs: dict[str, float] = dict(alone_refs or {})
        if i % 2 and alone_refs is None:
            refs = {n: reference_ms(m, x, args.threads) for n, m in models.items()}
        rows = run_sweep(work, f"agree_{tag}_{i}", args)
        if not i % 2 and alone_refs is None:
            refs = {n: reference_ms(m, x, args.threads) for n, m in models.items()}
        for name in models:
            if name not in rows:
                raise RuntimeError(f"the sweep's latency table has no batch-1 row for {name}")
            got[name]["rows"].append(rows[name])
            got[name]["ratios"].append(rows[name]["latency_ms_p50"] / refs[name])
    return got


@contextlib.contextmanager
def neighbour_trial(workdir: Path, timeout_s: float = 300.0) -> Any:
    """A second lvmbench trial training in a subprocess until the block ends."""
    sweep = workdir / "neighbour.yaml"
    sweep.write_text(textwrap.dedent(NEIGHBOUR_SWEEP))
    out = workdir / "neighbour_out"
    log = (workdir / "neighbour.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "trial", str(sweep), "--output", str(out)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"},
    )
    try:
        # Its first epoch row says it is in its training loop.
        deadline = time.monotonic() + timeout_s
        while not (out / "epochs").is_dir():
            if proc.poll() is not None:
                raise RuntimeError(f"the neighbour trial exited {proc.returncode}: see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the neighbour trial did not start training in {timeout_s} s")
            time.sleep(0.5)
        yield proc
    finally:
        proc.terminate()  # the process this script started, by its handle
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def report(case: str, name: str, got: dict[str, Any], tolerance: float) -> bool:
    """Print one figure line; True when the median ratio is within the tolerance."""
    median = statistics.median(got["ratios"])
    ok = abs(median - 1.0) <= tolerance
    target = f"target {1 - tolerance:.2f}-{1 + tolerance:.2f}"
    print(f"{ratio_line(f'{case:12s} {name}', got['ratios'], target)} {'ok' if ok else 'MISS'}")
    cvs = [r["cv"] for r in got["rows"] if r.get("cv") is not None]
    shares = [r["cpu_share"] for r in got["rows"] if r.get("cpu_share") is not None]
    p50s = [r["latency_ms_p50"] for r in got["rows"]]
    print(
        f"{'':13s}profiler p50 {_fmt(p50s)} ms; cv {_fmt(cvs, 3)}; cpu_share {_fmt(shares, 3)}"
        + (f"; reference {got['reference_ms']:.2f} ms" if "reference_ms" in got else "")
    )
    return ok


def _fmt(values: list[float], digits: int = 2) -> str:
    return ", ".join(f"{v:.{digits}f}" for v in values) or "-"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "vit_base_patch16_224"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both timers")
    p.add_argument("--rounds", type=int, default=4, help="ABAB rounds in this process")
    p.add_argument("--sweep-rounds", type=int, default=2, help="ABAB rounds of real sweeps")
    p.add_argument("--no-contended", action="store_true", help="skip the cases beside a trial")
    p.add_argument("--no-sweep", action="store_true", help="skip the python -m orchestrator cases")
    p.add_argument("--smoke", action="store_true", help="resnet18 at 64 px, few rounds")
    add_force_flag(p)
    args = p.parse_args()
    quiet_or_exit(args.force)
    if args.smoke:
        args.models, args.img_size, args.rounds, args.sweep_rounds = ["resnet18"], 64, 2, 1

    import timm
    import torch

    torch.set_num_threads(args.threads)
    results: list[bool] = []
    with tempfile.TemporaryDirectory(prefix="lvm-agree-") as tmp:
        work = Path(tmp)
        # A lock directory of its own, shared with the neighbour and the sweeps only.
        os.environ["LVMBENCH_LOCK_DIR"] = str(work / "locks")
        models = {}
        for name in args.models:
            # Transformers bake the token grid into the model: build them at the timed size.
            extra = {"img_size": args.img_size} if "vit" in name else {}
            models[name] = timm.create_model(
                name, pretrained=False, num_classes=NUM_CLASSES, **extra
            ).eval()
        print(
            f"cpu, {args.threads} thread(s), batch 1, {args.img_size} px, fp32, warm-up {WARMUP}, "
            f"repeats {REPEATS}; {args.rounds} round(s) in process, {args.sweep_rounds} of sweeps"
        )
        alone = {
            n: in_process(m, args.img_size, args.threads, args.rounds, None)
            for n, m in models.items()
        }
        for name, got in alone.items():
            results.append(report("alone", name, got, 0.05))
        if not args.no_sweep:
            for name, got in through_sweep(models, work, args, "alone").items():
                results.append(report("sweep alone", name, got, 0.05))
        if not args.no_contended:
            with neighbour_trial(work):
                print(f"beside a training trial ({load_line()})")
                for name, m in models.items():
                    ref = alone[name]["reference_ms"]
                    got = in_process(m, args.img_size, args.threads, args.rounds, ref)
                    results.append(report("beside trial", name, got, 0.10))
                if not args.no_sweep:
                    refs = {n: r["reference_ms"] for n, r in alone.items()}
                    for name, got in through_sweep(models, work, args, "beside", refs).items():
                        results.append(report("sweep beside", name, got, 0.10))
        print(f"after: {load_line()}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
