"""Does the latency profiler agree with `torch.utils.benchmark`? Alone, and beside a training trial.

For each model (default ResNet-50 and ViT-B/16, batch 1, 224 px, fp32, random weights), side by
side in one process with the same torch thread count:

- `profiler`: `profilers.latency.measure_latency` as a trial runs it (its default warm-up, repeats
  and time budget, inside the device's exclusive window), the median forward;
- `torch.utils.benchmark`: `Timer(...).blocked_autorange()` on the same model and input under
  `torch.inference_mode()`, its median.

Two cases:
1. **alone**: nothing else of lvmbench runs;
2. **beside a trial**: a second lvmbench trial trains on this node (`python -m orchestrator trial`
   on a one-trial sweep, in a subprocess, sharing the device lock directory), the case the
   exclusive window (`profilers.device_lock`) is there for: its steps pause while the profiler
   holds the window. The profiler's median is compared with the reference measured alone; the
   reference is also measured beside the trial without the window (what timing would read without
   it) and inside the window (the same pause, applied to the reference).

Target: profiler / reference within 10% in both cases. Each figure is the median of `--rounds`
rounds in ABBA order (profiler first, then the reference first, ...), so drift and order effects
hit both sides. The lock only
holds lvmbench trials off: on a machine shared with other programs both sides are as noisy as
the machine (the script prints the load average beside the figures).

    .venv/bin/python benchmarks/latency_agreement.py [--models resnet50 vit_base_patch16_224]
        [--img-size 224] [--threads 1] [--rounds 4] [--no-contended] [--smoke]
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

from _quiet import add_force_flag, quiet_or_exit  # benchmarks/_quiet.py

ROOT = Path(__file__).resolve().parent.parent
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


def profiler_ms(model: Any, img: int) -> tuple[float, bool]:
    """The latency profiler's median at batch 1 and whether its window was exclusive."""
    from profilers.latency import measure_latency
    from profilers.profile_config import LatencyProfilerConfig

    lat = LatencyProfilerConfig()
    row = measure_latency(
        model,
        "cpu",
        input_sizes=[img],
        batch_sizes=[1],
        warmup=lat.warmup,
        repeats=lat.repeats,
        max_point_s=lat.max_point_s,
        exclusive=True,
    )[0]
    if row["status"] != "ok":
        raise RuntimeError(f"latency point failed: {row['error']}")
    return row["latency_ms_p50"], bool(row["exclusive"])


def measure(model: Any, img: int, threads: int, rounds: int, contended: bool) -> dict[str, Any]:
    import torch

    from profilers.device_lock import lock_for

    x = torch.randn(1, 3, img, img)
    ours, ref, ref_window, exclusive = [], [], [], []
    for i in range(rounds):
        # ABBA: the reference goes first every other round, so order effects cancel.
        if i % 2:
            ref.append(reference_ms(model, x, threads))
        ms, excl = profiler_ms(model, img)
        ours.append(ms)
        exclusive.append(excl)
        if not i % 2:
            ref.append(reference_ms(model, x, threads))
        if contended:
            ref_window.append(reference_ms(model, x, threads, lock_for("cpu").exclusive()))
    out = {
        "profiler_ms": statistics.median(ours),
        "reference_ms": statistics.median(ref),
        "exclusive": all(exclusive),
    }
    if contended:
        out["reference_window_ms"] = statistics.median(ref_window)
    return out


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet50", "vit_base_patch16_224"])
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--threads", type=int, default=1, help="torch threads of both timers")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--no-contended", action="store_true", help="skip the case beside a trial")
    p.add_argument("--smoke", action="store_true", help="resnet18 at 64 px, one round")
    add_force_flag(p)
    args = p.parse_args()
    quiet_or_exit(args.force)
    if args.smoke:
        args.models, args.img_size, args.rounds = ["resnet18"], 64, 1

    import timm
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="lvm-agree-") as tmp:
        work = Path(tmp)
        # A lock directory of its own, shared with the neighbour only.
        os.environ["LVMBENCH_LOCK_DIR"] = str(work / "locks")
        models = {}
        for name in args.models:
            # Transformers bake the token grid into the model: build them at the timed size.
            extra = {"img_size": args.img_size} if "vit" in name else {}
            models[name] = timm.create_model(name, pretrained=False, **extra).eval()
        print(
            f"cpu, {args.threads} thread(s), batch 1, {args.img_size} px, fp32, "
            f"{args.rounds} round(s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        alone = {
            n: measure(m, args.img_size, args.threads, args.rounds, False)
            for n, m in models.items()
        }
        for name, r in alone.items():
            print(
                f"alone        {name:24s} profiler {r['profiler_ms']:8.2f} ms  "
                f"torch.utils.benchmark {r['reference_ms']:8.2f} ms  "
                f"ratio {r['profiler_ms'] / r['reference_ms']:.3f}"
            )
        if args.no_contended:
            return
        with neighbour_trial(work):
            beside = {
                n: measure(m, args.img_size, args.threads, args.rounds, True)
                for n, m in models.items()
            }
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        for name, r in beside.items():
            ref = alone[name]["reference_ms"]
            print(
                f"beside trial {name:24s} profiler {r['profiler_ms']:8.2f} ms (exclusive: "
                f"{r['exclusive']})  ratio to reference alone {r['profiler_ms'] / ref:.3f}; "
                f"reference beside it {r['reference_ms']:8.2f} ms (ratio {r['reference_ms'] / ref:.3f}), "
                f"in the window {r['reference_window_ms']:8.2f} ms "
                f"(profiler / it {r['profiler_ms'] / r['reference_window_ms']:.3f})"
            )


if __name__ == "__main__":
    main()
