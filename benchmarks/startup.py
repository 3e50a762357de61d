"""How long a one-batch sweep takes from the command to its exit, where that time goes, and what
each further trial costs.

1. End to end: seconds from launching `python -m orchestrator SWEEP.yaml` (one tiny one-batch
   trial, profilers off) to the command's exit, and to its first `epochs` row on disk, `--repeats`
   times (default 5; the median counts). Target: <= 10 s to the exit. Before it, `validate` twice:
   the first command of an install reads timm's model and optimizer names into lvmbench's cache
   (`trainables.models.installed`), every later one reads the cache. With `--compare-preload` the
   runs alternate (ABAB) with runs whose Ray workers preload the trial's modules as they start
   (`LVMBENCH_RAY_PRELOAD=1`, `orchestrator.driver.sweep_runner.preload_config`; off by default),
   both medians printed.
2. The breakdown of one such run, stamped from inside the driver (the same command, its functions
   wrapped with timestamps): interpreter and driver imports, Ray's start (`init_ray`), Tune's
   set-up until the trial starts (the sinks' `log_trial_start`), the trial until its first result
   (the worker's imports of torch and timm, the trial's own work, `tune.report`), the trial's end
   until the Tuner returns, the summary, Ray's shutdown (`shutdown_ray`) and the interpreter's exit.
3. Per-trial overhead: sweeps of `--trials` and of 4 one-batch trials, two at a time (one CPU
   each), `isolation: reuse` (the default) and, with `--isolation both`, `process`. The overhead
   of a further trial is what the larger sweep costs beyond the smaller one, per extra trial:
   (wall time difference x 2 slots - the difference in the trials' own `time/total_s`) / extra
   trials; the one-time start (driver, Ray, the first workers' imports) cancels out. The average
   over the large sweep, one-time start included, is printed beside it. Target: <= 1 s per trial.

The load average is printed first; on a busy machine (1-minute load above half the cores) the
script refuses, exit 3, unless `--force`.

    python benchmarks/startup.py [--repeats 5] [--compare-preload] [--skip-sweep]
        [--trials 24] [--isolation reuse|process|both] [--force]

Output (the figure is the `end to end` line):

    machine: load average 0.05, 0.20, 0.30 on 2 cores
    validate: 2.1 s the first time on this install ..., 0.6 s after
    end to end: command exits after 9.4 s (median of 5: 9.1, 9.3, 9.4, 9.8, 10.2 s; target <= 10 s) ok; first epoch row after 7.9 s
    breakdown of one run (s from the command):
      driver imports               1.10   (at 1.10)
      ray start (init_ray)         3.50   (at 4.60)
      ...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _quiet import add_force_flag, quiet_or_exit  # benchmarks/_quiet.py

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SLOTS = 2
SMALL = 4  # trials of the smaller sweep the per-trial overhead is measured against

ONE_BATCH = """\
name: {name}
trainable: train
model: {{name: resnet10t, img_size: 16}}
dataset: {{name: digits, subset: 64}}
optim: {{batch_size: 8, epochs: 1, max_train_batches: 1, max_val_batches: 1}}
precision: fp32
isolation: {isolation}
profilers: {{latency: false, flops: false, memory: false, params: false}}
checkpoint: {{enabled: false}}
resources: {{cpu: 1}}
{search}
"""

# The same command, its driver's functions wrapped with timestamps (seconds since the launch,
# LVM_T0 in the environment): the breakdown of a real run.
TIMELINE = r"""
import atexit, functools, os, sys, time
T0 = float(os.environ["LVM_T0"])
def stamp(what):
    print(f"STAMP {time.time() - T0:.3f} {what}", file=sys.stderr, flush=True)
def wrap(owner, name, label):
    fn = getattr(owner, name)
    @functools.wraps(fn)
    def timed(*a, **k):
        stamp(f"start {label}")
        try:
            return fn(*a, **k)
        finally:
            stamp(f"end {label}")
    setattr(owner, name, timed)
stamp("python")
from orchestrator import cli
import orchestrator.driver.sweep_runner as sr
import orchestrator.driver.run_summary as rs
import ray.tune
from orchestrator.sinks.parquet_rows import ParquetSink
stamp("imports")
wrap(sr, "init_ray", "init_ray")
wrap(ray.tune.Tuner, "fit", "fit")
wrap(ParquetSink, "log_trial_start", "trial_start")
wrap(ParquetSink, "log_trial_result", "trial_result")
wrap(ParquetSink, "log_trial_end", "trial_end")
wrap(rs, "print_run_summary", "summary")
# Registered last, so it runs first at exit: Ray's own shutdown hook follows it.
atexit.register(stamp, "atexit")
wrap(sr, "shutdown_ray", "shutdown_ray")
sys.argv = ["orchestrator", *sys.argv[1:]]
rc = cli.entry()  # what `python -m orchestrator` runs
stamp("main returned")
sys.exit(rc)
"""


def validate_s(folder: Path, sweep: Path) -> float:
    """Seconds `python -m orchestrator validate SWEEP` takes with the folder's name cache."""
    env = {**os.environ, "LVMBENCH_CACHE": str(folder / "cache")}
    t0 = time.perf_counter()
    subprocess.run(
        [PY, "-m", "orchestrator", "validate", str(sweep)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        timeout=600,
        check=True,
    )
    return time.perf_counter() - t0


def run_sweep(
    folder: Path,
    name: str,
    isolation: str,
    trials: int,
    *,
    preload: bool = False,
    timeline: bool = False,
) -> dict[str, Any]:
    """Launch a sweep; seconds to the first epoch row and to exit; its trials' total_s; with
    `timeline`, the driver's stamps (`TIMELINE`)."""
    search = f"search: {{seed: {{grid: {list(range(trials))}}}}}" if trials > 1 else ""
    sweep = folder / f"{name}.yaml"
    sweep.write_text(ONE_BATCH.format(name=name, isolation=isolation, search=search))
    out = folder / f"out-{name}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "LVMBENCH_CACHE": str(folder / "cache"),
        "LVMBENCH_RAY_PRELOAD": "1" if preload else "0",
        "LVM_T0": repr(time.time()),
    }
    command = ["-c", TIMELINE] if timeline else ["-m", "orchestrator"]
    stamps_file = (folder / f"{name}.stamps").open("w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PY, *command, str(sweep), "--output", str(out), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stamps_file,
    )
    first_row = None
    while proc.poll() is None:
        if first_row is None and any((out / "epochs").rglob("*.parquet")):
            first_row = time.perf_counter() - t0
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    stamps_file.close()
    stamps = [
        (float(line.split()[1]), " ".join(line.split()[2:]))
        for line in (folder / f"{name}.stamps").read_text().splitlines()
        if line.startswith("STAMP ")
    ]
    if first_row is None and any((out / "epochs").rglob("*.parquet")):
        first_row = wall
    totals: list[float] = []
    if (out / "trials").is_dir():
        import pandas as pd

        df = pd.read_parquet(out / "trials")
        totals = [float(v) for v in df.get("time/total_s", pd.Series(dtype=float)).dropna()]
    return {
        "rc": float(proc.returncode),
        "first_row_s": first_row,
        "wall_s": wall,
        "trials_done": float(len(totals)),
        "trial_total_s": sum(totals) if totals else None,
        "stamps": stamps,
    }


# (label, the stamp that ends the phase); each phase runs from the previous one's end.
PHASES = (
    ("interpreter + driver imports", "imports"),
    ("ray start (init_ray)", "end init_ray"),
    ("Tune set-up to trial start", "start trial_start"),
    ("trial to its first result", "start trial_result"),
    ("trial end, Tuner returns", "end fit"),
    ("summary", "end summary"),
    ("Ray shutdown (shutdown_ray)", "end shutdown_ray"),
    ("interpreter exit", "exit"),
)


def print_breakdown(run: dict[str, Any]) -> None:
    at = {what: t for t, what in run["stamps"]}
    at["exit"] = run["wall_s"]
    print("breakdown of one run (s from the command):")
    last = 0.0
    for label, stamp in PHASES:
        if stamp not in at:
            print(f"  {label:30s}      -   (no '{stamp}' stamp)")
            continue
        print(f"  {label:30s} {at[stamp] - last:6.2f}   (at {at[stamp]:.2f})")
        last = at[stamp]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--isolation", choices=("reuse", "process", "both"), default="reuse")
    p.add_argument("--skip-sweep", action="store_true", help="only the one-trial start-up")
    p.add_argument("--repeats", type=int, default=5, help="end-to-end runs (the median counts)")
    p.add_argument(
        "--compare-preload",
        action="store_true",
        help="alternate with runs whose Ray workers preload the trial's modules (opt-in)",
    )
    add_force_flag(p)
    args = p.parse_args()
    quiet_or_exit(args.force)
    with tempfile.TemporaryDirectory(prefix="lvm-startup-") as tmp:
        folder = Path(tmp)
        print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")
        # The sweeps below use a name cache of their own (LVMBENCH_CACHE in the folder): the
        # first command of an install reads timm's registry once, the later ones the cache.
        (folder / "probe.yaml").write_text(
            ONE_BATCH.format(name="probe", isolation="reuse", search=""), encoding="utf-8"
        )
        cold, warm = (validate_s(folder, folder / "probe.yaml") for _ in range(2))
        print(
            f"validate: {cold:.1f} s the first time on this install (reads timm's model and "
            f"optimizer names into the cache), {warm:.1f} s after"
        )
        runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
        sides = (False, True) if args.compare_preload else (False,)
        for i in range(args.repeats):
            # ABAB: with --compare-preload the order alternates between rounds.
            for preload in sides if i % 2 == 0 else sides[::-1]:
                name = f"startup_one_{int(preload)}_{i}"
                runs[preload].append(run_sweep(folder, name, "reuse", 1, preload=preload))
        for preload in sides:
            done = runs[preload]
            walls = sorted(r["wall_s"] for r in done)
            firsts = sorted(r["first_row_s"] or float("nan") for r in done)
            wall = statistics.median(walls)
            what = "end to end with the workers' preload (opt-in)" if preload else "end to end"
            print(
                f"{what}: command exits after {wall:.1f} s (median of {len(walls)}: "
                f"{', '.join(f'{x:.1f}' for x in walls)} s; target <= 10 s) "
                f"{'ok' if wall <= 10 else 'MISS'}; first epoch row after "
                f"{statistics.median(firsts):.1f} s; rc {max(r['rc'] for r in done):.0f}"
            )
        print_breakdown(run_sweep(folder, "startup_timeline", "reuse", 1, timeline=True))
        if args.skip_sweep:
            return 0
        modes = ("reuse", "process") if args.isolation == "both" else (args.isolation,)
        small = min(SMALL, args.trials - 1)
        for mode in modes:
            few = run_sweep(folder, f"startup_{mode}_{small}", mode, small)
            got = run_sweep(folder, f"startup_{mode}_{args.trials}", mode, args.trials)
            inside = got["trial_total_s"] or 0.0
            n = args.trials
            overall = (got["wall_s"] * SLOTS - inside) / n
            extra = (
                (got["wall_s"] - few["wall_s"]) * SLOTS - (inside - (few["trial_total_s"] or 0.0))
            ) / (n - small)
            print(
                f"{n} one-batch trials, {SLOTS} at a time, isolation {mode}: {got['wall_s']:.1f} s "
                f"wall ({small} trials: {few['wall_s']:.1f} s), {got['trials_done']:.0f} trials "
                f"done, {inside:.1f} s inside trials; overhead of a further trial {extra:.2f} s "
                f"(target <= 1 s), {overall:.2f} s on average with the one-time start"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
