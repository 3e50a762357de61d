"""Real processes for the cluster and fault tests: Ray nodes, the CLI as a subprocess, cleanup.

Everything a test starts runs in its own process group (`start_new_session=True`); it is ended by
that group and by the process ids recorded under it, never by name, so other Ray users on the
machine are untouched.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
RAY = str(Path(sys.executable).with_name("ray"))


def ray_auth() -> dict[str, str]:
    """Ray 2.60 turns token authentication on for a `ray start --head` cluster: a token of the
    test's own for every node and driver of it (never the user's ~/.ray/auth_token)."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Group:
    """A process started in a new session, and every descendant seen while it ran."""

    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.seen: dict[int, float] = {}

    def descendants(self) -> list[psutil.Process]:
        """Live processes under this group's leader; remembered for the cleanup."""
        try:
            found = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        for p in found:
            with _gone():
                self.seen.setdefault(p.pid, p.create_time())
        return found

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.descendants()
        with _gone():
            os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired as err:
            self.stop()
            raise AssertionError(
                f"still running after {timeout:.0f} s; log:\n{self.tail()}"
            ) from err

    def stop(self, grace: float = 10.0) -> None:
        """End the group: SIGTERM, then SIGKILL, then any recorded descendant that left it."""
        if self.proc.poll() is None:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.proc.wait(grace)
        with _gone():
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid, created in self.seen.items():
            with _gone():
                p = psutil.Process(pid)
                if p.create_time() == created:  # the same process, not a reused pid
                    p.kill()
        self._log.close()

    def tail(self, n: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _gone() -> suppress:
    """Ignore a process that has already exited."""
    return suppress(ProcessLookupError, psutil.NoSuchProcess, psutil.AccessDenied)


def cli_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(MLFLOW_TRACKING_URI=tracking_uri, PYTHONPATH=str(ROOT), **extra)
    return env


def run_cli(args: list[str], *, env: dict[str, str], log: Path) -> Group:
    return Group([sys.executable, "-m", "orchestrator", *args], env=env, log=log)


def wait_for(
    check: Callable[[], Any], timeout: float, what: str, group: Group | None = None
) -> Any:
    """Poll `check` until it returns something truthy."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = check()
        if got:
            return got
        if group is not None and group.proc.poll() is not None:
            raise AssertionError(f"exited {group.proc.returncode} before {what}:\n{group.tail()}")
        time.sleep(0.5)
    raise AssertionError(
        f"no {what} after {timeout:.0f} s" + (f":\n{group.tail()}" if group else "")
    )


def epoch_rows(table_dir: Path) -> list[dict[str, Any]]:
    """Rows of a Parquet table read part by part (a part is replaced atomically while we read)."""
    rows: list[dict[str, Any]] = []
    for part in sorted(table_dir.glob("*.parquet")) if table_dir.is_dir() else []:
        try:
            rows += pq.read_table(part).to_pylist()
        except (OSError, ValueError):
            continue
    return rows


class RayNode(Group):
    """`ray start --block` in its own group: one node with one CPU and a custom resource."""

    def __init__(
        self,
        temp_dir: Path,
        log: Path,
        *,
        resource: str,
        head_port: int | None = None,
        address: str | None = None,
        auth: dict[str, str],
    ) -> None:
        args = [
            RAY,
            "start",
            "--block",
            "--num-cpus",
            "1",
            "--num-gpus",
            "0",
            "--resources",
            json.dumps({resource: 1}),
            "--disable-usage-stats",
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        if head_port is not None:
            args += [
                "--head",
                "--port",
                str(head_port),
                "--temp-dir",
                str(temp_dir),
                "--include-dashboard",
                "false",
            ]
        else:
            args += ["--address", str(address)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(PYTHONPATH=str(ROOT), **auth)
        super().__init__(args, env=env, log=log)


def mlflow_runs(uri: str, experiment: str) -> list[Any]:
    """Every run of an MLflow experiment, any status."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    return list(client.search_runs([exp.experiment_id], max_results=1000))


def steps(uri: str, run_id: str, key: str = "val/acc") -> list[int]:
    from mlflow import MlflowClient

    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, key))
