"""How long until a sweep shows its first epoch row, where that time goes, and what each further
trial costs.

1. End to end: seconds from launching `python -m orchestrator SWEEP.yaml` (a one-batch sweep of
   one tiny trial) to its first `epochs` row on disk, and to the command's exit, `--repeats`
   times (the median counts: a shared VM's start-up varies by seconds). Target: <= 15 s.
   Before it, `validate` twice: the first command of an install reads timm's model and optimizer
   names into lvmbench's cache (`trainables.models.installed`), every later one reads the cache.
2. The parts, each measured alone in a fresh process: the driver's imports (what the CLI loads
   before Ray starts), Ray's start (`init_ray` as sweeps call it), the trial start (a worker's
   imports of torch, timm, Accelerate and the trainable), model build, data (dataset, pipeline,
   loaders) and the first training step. What end to end shows beyond their sum is Tune's
   scheduling, the sinks and the polling interval.
3. Per-trial overhead: sweeps of `--trials` and of 4 one-batch trials, two at a time (one CPU
   each), `isolation: reuse` (the default) and, with `--isolation both`, `process`. The overhead
   of a further trial is what the larger sweep costs beyond the smaller one, per extra trial:
   (wall time difference x 2 slots - the difference in the trials' own `time/total_s`) / extra
   trials; the one-time start (driver, Ray, the first workers' imports) cancels out. The average
   over the large sweep, one-time start included, is printed beside it. Target: <= 1 s per trial.

    python benchmarks/startup.py [--trials 24] [--isolation reuse|process|both] [--skip-sweep]
        [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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

PARTS = {
    "driver imports": "import orchestrator.cli, orchestrator.driver.stages, orchestrator.driver.sweep_runner, "
    "orchestrator.driver.offline, orchestrator.driver.run_summary",
    "ray start": "from orchestrator.driver.sweep_runner import init_ray\nimport ray\n"
    "t = time.perf_counter()\ninit_ray(None)\nelapsed = time.perf_counter() - t\nray.shutdown()",
    "trial start (worker imports)": "import torch, timm, accelerate\n"
    "import orchestrator.workers.trial_runner, trainables.train",
}

STEPS = """
import time, torch
import timm  # a worker has it from its trial start (above)
torch.set_num_threads(1)
from trainables.config import TrialConfig
from trainables.loop.setup import TrialSetup
from trainables.models.create import create_model
from trainables.loop.fit import fit
from trainables.loop.reporting import ListReporter
cfg = TrialConfig.model_validate({
    "model": {"name": "resnet10t", "img_size": 16}, "dataset": {"name": "digits", "subset": 64},
    "optim": {"batch_size": 8, "epochs": 1, "max_train_batches": 1, "max_val_batches": 1},
    "precision": "fp32", "checkpoint": {"enabled": False},
    "profilers": {"latency": False, "flops": False, "memory": False, "params": False}})
t = time.perf_counter(); setup = TrialSetup.begin(cfg); t_open = time.perf_counter() - t
t = time.perf_counter(); model = create_model(cfg.model, setup.num_classes)
t_model = time.perf_counter() - t
t = time.perf_counter(); ctx = setup.with_model(model); t_data = t_open + time.perf_counter() - t
r = ListReporter(); t = time.perf_counter(); fit(ctx, model, r)
print(t_model, t_data, r.reports[0]["time/epoch_s"], time.perf_counter() - t)
"""


def timed_python(code: str) -> float:
    """Seconds `code` takes in a fresh interpreter (or the `elapsed` it sets itself)."""
    wrapped = (
        f"import time\nt = time.perf_counter()\n{code}\n"
        "print('ELAPSED', globals().get('elapsed', time.perf_counter() - t))\n"
    )
    out = subprocess.run(
        [PY, "-c", wrapped], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
    )
    return float(out.stdout.split("ELAPSED")[-1].split()[0])


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


def run_sweep(folder: Path, name: str, isolation: str, trials: int) -> dict[str, float | None]:
    """Launch a sweep; seconds to the first epoch row and to exit; its trials' total_s."""
    search = f"search: {{seed: {{grid: {list(range(trials))}}}}}" if trials > 1 else ""
    sweep = folder / f"{name}.yaml"
    sweep.write_text(ONE_BATCH.format(name=name, isolation=isolation, search=search))
    out = folder / f"out-{name}"
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}",
        "LVMBENCH_CACHE": str(folder / "cache"),
    }
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "orchestrator", str(sweep), "--output", str(out), "--quiet"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first_row = None
    while proc.poll() is None:
        if first_row is None and any((out / "epochs").rglob("*.parquet")):
            first_row = time.perf_counter() - t0
        time.sleep(0.05)
    wall = time.perf_counter() - t0
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
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--isolation", choices=("reuse", "process", "both"), default="reuse")
    p.add_argument("--skip-sweep", action="store_true", help="only the one-trial start-up")
    p.add_argument("--repeats", type=int, default=3, help="end-to-end runs (the median counts)")
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
        runs = [run_sweep(folder, f"startup_one_{i}", "reuse", 1) for i in range(args.repeats)]
        firsts = sorted(r["first_row_s"] or float("nan") for r in runs)
        one = sorted(runs, key=lambda r: r["first_row_s"] or float("inf"))[len(runs) // 2]
        print(
            f"end to end: first epoch row after {one['first_row_s']:.1f} s, command exits after "
            f"{one['wall_s']:.1f} s (median of {len(runs)}: {', '.join(f'{x:.1f}' for x in firsts)}"
            f" s; target <= 15 s to the first row; rc {max(r['rc'] for r in runs):.0f})"
        )
        parts = {name: timed_python(code) for name, code in PARTS.items()}
        out = subprocess.run(
            [PY, "-c", STEPS], cwd=ROOT, capture_output=True, text=True, timeout=600, check=True
        )
        model_s, data_s, step_s, _fit_s = (float(x) for x in out.stdout.split()[-4:])
        parts.update({"model build": model_s, "data": data_s, "first step (epoch)": step_s})
        for name, seconds in parts.items():
            print(f"  {name:30s} {seconds:6.2f} s")
        rest = (one["first_row_s"] or 0.0) - sum(parts.values())
        print(f"  {'the rest (Tune, sinks, polling)':30s} {rest:6.2f} s")
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
