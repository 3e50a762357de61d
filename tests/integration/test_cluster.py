"""A real two-node Ray cluster on this machine: `--address` places trials on both nodes.

Two `ray start` nodes, each with one CPU and its own custom resource, in their own process groups
(ended by group and recorded pids, never by name). A two-trial sweep asking for one CPU per trial
must run one trial on each node; the driver alone writes Parquet and MLflow.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.process_helpers import (
    RayNode,
    cli_env,
    free_port,
    mlflow_runs,
    ray_auth,
    run_cli,
    steps,
    wait_for,
)

SWEEP = """
name: two_nodes
trainable: train
model: {name: resnet10t, img_size: 16}
dataset: {name: digits, subset: 96}
optim: {batch_size: 32, epochs: 2, max_train_batches: 2, max_val_batches: 1}
precision: fp32
search: {seed: {grid: [0, 1]}}
profilers: {latency: false, flops: false}
resources: {cpu: 1}
checkpoint: {enabled: false}
"""


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_sweep_with_address_runs_trials_on_both_nodes(tmp_path: Path) -> None:
    # Ray's socket paths must stay short: a temp dir of its own, directly under /tmp.
    ray_tmp = Path(tempfile.mkdtemp(prefix="lvmr", dir="/tmp"))
    port = free_port()
    auth = ray_auth()
    head = RayNode(ray_tmp, tmp_path / "head.log", resource="node_a", head_port=port, auth=auth)
    nodes = [head]
    try:
        wait_for(lambda: _port_open(port), 90, "Ray head listening", head)
        address = f"127.0.0.1:{port}"
        worker_log = tmp_path / "worker.log"
        nodes.append(RayNode(ray_tmp, worker_log, resource="node_b", address=address, auth=auth))
        time.sleep(2)
        sweep = tmp_path / "two_nodes.yaml"
        sweep.write_text(SWEEP)
        uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        out = tmp_path / "out"
        driver = run_cli(
            [str(sweep), "--address", address, "--output", str(out), "--quiet"],
            env=cli_env(uri, **auth),
            log=tmp_path / "driver.log",
        )
        try:
            code = driver.wait(240)
        finally:
            driver.stop()
        assert code == 0, driver.tail()
        for node in nodes:
            node.descendants()  # record the workers the nodes started, for the cleanup
    finally:
        for node in reversed(nodes):
            node.stop()

    trials = pd.read_parquet(out / "trials")
    assert len(trials) == 2 and set(trials["status"]) == {"TERMINATED"}
    assert trials["env/ray_node_id"].nunique() == 2, trials["env/ray_node_id"].tolist()
    epochs = pd.read_parquet(out / "epochs")
    assert sorted(epochs.groupby("trial_id")["epoch"].apply(list).tolist()) == [[1, 2], [1, 2]]

    runs = mlflow_runs(uri, "two_nodes")
    children = [r for r in runs if r.data.tags["lvmbench.role"] == "trial"]
    assert len(runs) == 3 and len(children) == 2
    for run in children:
        assert steps(uri, run.info.run_id) == [1, 2]
    assert {r.info.status for r in runs} == {"FINISHED"}


COMPOSE = Path(__file__).resolve().parents[2] / "docker" / "compose.yaml"


def test_compose_binds_to_localhost_and_mounts_the_storage_on_every_node() -> None:
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert {"head", "worker", "mlflow", "db"} <= set(services)
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p.startswith("${LVMBENCH_BIND:-127.0.0.1}:") for p in published)
    for name in ("head", "worker"):
        node = {**spec["x-node"], **services[name]}
        assert "../results:/results" in node["volumes"], name
    command = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql" in command and "--artifacts-destination" in command
    # The Docker CLI validates the whole file where it is installed (Debian: docker-compose).
    cli = (
        ["docker", "compose"]
        if shutil.which("docker") and _ok(["docker", "compose", "version"])
        else ["docker-compose"]
        if shutil.which("docker-compose")
        else None
    )
    if cli is not None:
        out = subprocess.run(
            [*cli, "-f", str(COMPOSE), "config"], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "127.0.0.1:5000:5000" in out.stdout


def _ok(args: list[str]) -> bool:
    return subprocess.run(args, capture_output=True, timeout=30).returncode == 0
