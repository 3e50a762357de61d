"""Multi-worker trials: a Tune trial that drives a two-worker Ray Train TorchTrainer (gloo, CPU).

Ray starts locally in this process (two CPUs: 0.5 per worker plus the driver's 0.01); the session
fixture in conftest shuts it down. The only processes killed here are this Ray session's own
training workers, found among this process's descendants by pid.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import mlflow
import pandas as pd
import psutil
import pytest

from orchestrator.cli import main
from orchestrator.driver.schema import SweepError, parse_sweep_text
from orchestrator.workers.train_workers import DRIVER_CPU, trial_demand

SWEEP = """
name: {name}
trainable: train
model: {{name: resnet10t, img_size: 16}}
dataset: {{name: digits, subset: 300}}
optim: {{lr: 3.0e-3, batch_size: 32, epochs: {epochs}}}
precision: fp32
profilers: {{latency: null, flops: {{train_step: false}}}}
resources: {{workers: 2, cpu_per_worker: 0.5}}
max_failures: {max_failures}
"""


def test_resources_take_one_form_or_the_other() -> None:
    res = parse_sweep_text("resources: {workers: 2, cpu_per_worker: 0.5}").resources
    assert (res.worker_cpu, res.worker_gpu) == (0.5, 0.0)
    assert trial_demand(res) == {"CPU": 2 * 0.5 + DRIVER_CPU, "GPU": 0.0}
    one = parse_sweep_text("resources: {cpu: 2, gpu: 0.5}").resources
    assert trial_demand(one) == {"CPU": 2.0, "GPU": 0.5}
    bad = {
        "resources: {workers: 2, cpu: 2}": "give cpu_per_worker / gpu_per_worker instead of cpu",
        "resources: {gpu_per_worker: 1}": "gpu_per_worker needs workers > 1",
        "resources: {workers: 0}": "resources.workers",
        "resources: {workers: 2}\ndataset: {on_device: true}": "set on_device: false",
        "optim: {auto_batch_size: true}\ndataset: {on_device: true}": "optim.auto_batch_size",
    }
    for text, message in bad.items():
        with pytest.raises(SweepError, match=message.replace("(", r"\(")):
            parse_sweep_text(text)


def test_the_resource_check_counts_every_worker_and_the_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import ray

    from orchestrator.driver.sweep_runner import check_resources

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    fits = parse_sweep_text("resources: {workers: 2, cpu_per_worker: 0.5}")
    assert check_resources(fits, local=True) is fits
    too_big = parse_sweep_text("resources: {workers: 2, cpu_per_worker: 1}")
    with pytest.raises(SweepError, match=r"resources.cpu_per_worker: .*2 workers x 1 \+ 0.01"):
        check_resources(too_big, local=True)
    too_big.smoke = True
    capped = check_resources(too_big, local=True).resources
    assert capped.workers == 2 and capped.cpu_per_worker == pytest.approx((2 - DRIVER_CPU) / 2)


def run_cli(tmp: Path, name: str, epochs: int, max_failures: int = 0) -> tuple[Path, int]:
    sweep = tmp / f"{name}.yaml"
    sweep.write_text(SWEEP.format(name=name, epochs=epochs, max_failures=max_failures))
    out = tmp / "out"
    return out, main([str(sweep), "--output", str(out), "--quiet"])


@pytest.mark.slow
def test_two_workers_train_on_the_whole_split(tmp_path: Path, mlflow_uri: str) -> None:
    out, code = run_cli(tmp_path, "two_workers", epochs=3)
    assert code == 0
    trials = pd.read_parquet(out / "trials")
    epochs = pd.read_parquet(out / "epochs").sort_values("epoch")
    assert len(trials) == 1 and trials["status"].iloc[0] == "TERMINATED"
    trial = trials.iloc[0]
    assert trial["dist/world_size"] == 2
    assert trial["env/ray_node_id"] and trial["env/node_ip"]
    assert epochs["epoch"].tolist() == [1, 2, 3]
    # Each worker trains on its shard; together they cover the split once, not half of it
    # (300 = 4 full global batches of 2 x 32 + 44: the padding of the last batch is left out).
    assert trial["data/train_samples"] == 300
    assert (epochs["train/samples"] == 300).all()
    # Validation is gathered over the workers: every validation sample, scored once.
    assert trial["data/val_samples"] == 300
    assert (epochs["val/samples"] == 300).all()
    losses = epochs["train/loss"].tolist()
    assert losses[-1] < losses[0], losses
    assert (epochs["time/samples_per_s"] > 0).all()
    # Rank 0 speaks for the trial: one MLflow child run with one value per epoch.
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["two_workers"])
    child = runs[runs["tags.lvmbench.role"] == "trial"]
    assert len(child) == 1
    history = mlflow.MlflowClient().get_metric_history(child["run_id"].iloc[0], "train/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]
    # Rank 0 wrote the checkpoints, into the Ray Train run inside the Tune trial's folder.
    assert list((out / "_tune").glob("two_workers-*/*/ray_train/checkpoint_*"))


def _train_workers() -> list[psutil.Process]:
    """This Ray session's training-worker processes (descendants of this test process)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.mark.slow
def test_a_killed_worker_resumes_from_its_checkpoint(tmp_path: Path, mlflow_uri: str) -> None:
    killed: dict[str, int] = {}
    epochs_dir = tmp_path / "out" / "epochs"

    def kill_after_first_epoch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and not killed:
            done = len(pd.read_parquet(epochs_dir)) if epochs_dir.is_dir() else 0
            workers = _train_workers()
            if done >= 1 and workers:
                killed["pid"], killed["epochs_done"] = workers[-1].pid, done
                os.kill(workers[-1].pid, signal.SIGKILL)
                return
            time.sleep(0.5)

    killer = threading.Thread(target=kill_after_first_epoch, daemon=True)
    killer.start()
    out, code = run_cli(tmp_path, "worker_killed", epochs=4, max_failures=1)
    killer.join(timeout=5)
    assert killed, "no training worker was found to kill"
    assert killed["epochs_done"] < 4, "the worker was killed after training had finished"
    assert code == 0
    trials = pd.read_parquet(out / "trials")
    assert trials["status"].tolist() == ["TERMINATED"]
    epochs = pd.read_parquet(out / "epochs")
    assert sorted(epochs["epoch"]) == [1, 2, 3, 4]
    assert (epochs["train/samples"] == 300).all()
    # Restarted from the checkpoint, not from scratch: no epoch reached Tune twice (Tune's
    # own log of every result it received, before any sink could drop a repeat).
    (log,) = (out / "_tune").glob("worker_killed-*/*/result.json")
    results = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    reported = [r["epoch"] for r in results if "epoch" in r and not r.get("_final")]
    assert sorted(reported) == [1, 2, 3, 4], reported
    # And the workers did restart: the new rank 0 sent the trial's facts again, once (every
    # epoch report also carries the trial's running times).
    sent = [r["_facts"] for r in results if "_facts" in r and not r.get("_final")]
    assert sum("env/ray_node_id" in f for f in sent) == 2


@pytest.mark.gpu
@pytest.mark.slow
def test_two_gpu_workers_train_under_nccl(tmp_path: Path, mlflow_uri: str) -> None:
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 CUDA devices")
    sweep = tmp_path / "gpus.yaml"
    sweep.write_text(
        SWEEP.format(name="gpus", epochs=2, max_failures=0).replace(
            "resources: {workers: 2, cpu_per_worker: 0.5}",
            "resources: {workers: 2, cpu_per_worker: 1, gpu_per_worker: 1}\ndevice: cuda",
        )
    )
    out = tmp_path / "out"
    assert main([str(sweep), "--output", str(out), "--quiet"]) == 0
    trial = pd.read_parquet(out / "trials").iloc[0]
    epochs = pd.read_parquet(out / "epochs")
    assert trial["dist/world_size"] == 2 and trial["env/device"] == "cuda"
    assert (epochs["train/samples"] == 300).all() and (epochs["val/samples"] == 300).all()
    assert (epochs["mem/gpu_peak_allocated_mb"] > 0).all()


def _max_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from profilers.memory import max_over_workers

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        got = max_over_workers(
            {
                "mem/cpu_peak_rss_mb": [100.0, 250.0][rank],
                "mem/gpu_peak_allocated_mb": None,
                "mem/cpu_rss_scope": "region",
                "val/acc": [0.1, 0.9][rank],
            }
        )
        Path(out, f"{rank}.json").write_text(json.dumps(got))
    finally:
        dist.destroy_process_group()


def test_peak_memory_is_the_largest_workers(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_max_worker, args=(init, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"{rank}.json").read_text())
        assert got["mem/cpu_peak_rss_mb"] == 250.0  # the max, on every worker
        assert got["mem/gpu_peak_allocated_mb"] is None  # null everywhere stays null
        assert got["mem/cpu_rss_scope"] == "region"
        assert got["val/acc"] == [0.1, 0.9][rank]  # only mem/* figures are reduced
