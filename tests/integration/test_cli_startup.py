"""The command line answers before it loads the heavy stack: `--help` imports neither torch nor Ray,
`validate` never starts Ray, and the help names the real MLflow default."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_help_imports_neither_torch_nor_ray() -> None:
    out = run_python(
        "import sys\n"
        "import orchestrator.cli as cli\n"
        "try:\n"
        "    cli.main(['--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'timm', 'mlflow', 'pandas') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout[-500:]
    for command in ("run", "validate", "trial", "train", "report", "models"):
        assert f"    {command} " in out.stdout, f"--help does not list {command!r}"


def test_tracking_uri_help_names_the_real_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = " ".join(out.stdout.split())
    assert "MLFLOW_TRACKING_URI" in text
    assert "sqlite:///<cwd>/mlruns/mlflow.db" in text


def test_every_command_has_its_own_help() -> None:
    for command in ("run", "validate", "trial", "train", "report", "models"):
        out = subprocess.run(
            [sys.executable, "-m", "orchestrator", command, "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, (command, out.stderr)
        assert f"usage: python -m orchestrator {command}" in out.stdout


def test_validate_does_not_start_ray() -> None:
    out = run_python(
        "import sys\n"
        "import orchestrator.cli as cli\n"
        "code = cli.main(['validate', 'sweeps/perf_tuning.yaml', '--smoke'])\n"
        "ray = sys.modules.get('ray')\n"
        "print('CODE', code, 'RAY_STARTED', bool(ray and ray.is_initialized()))\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CODE 0 RAY_STARTED False" in out.stdout
    assert "== stage 'on_device-cifar100'" in out.stdout


def test_summary_links_the_sweeps_runs_view(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from orchestrator.driver.run_summary import runs_link

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runs_link(uri, "nothing_here") is None
    experiment_id = MlflowClient(uri).create_experiment("my_sweep")
    assert runs_link(uri, "my_sweep") == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"


def test_route_logs_sends_ray_and_mlflow_records_to_the_file(tmp_path: Path) -> None:
    import logging

    from orchestrator.driver.sweep_runner import ROUTED_LOGGERS, route_logs

    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate)
        for n in ROUTED_LOGGERS
    }
    try:
        route_logs(tmp_path / "ray.log")
        route_logs(tmp_path / "ray.log")  # twice: still one handler
        logging.getLogger("ray.tune").warning("snapshotting is slow")
        logging.getLogger("mlflow.store").warning("creating tables")
        for name in ROUTED_LOGGERS:
            logger = logging.getLogger(name)
            # Exactly one handler writes our log file (another library's own file handler, e.g.
            # Ray's to /dev/null after an earlier ray.init in this process, may stay).
            ours = [
                h
                for h in logger.handlers
                if getattr(h, "baseFilename", None) == os.path.abspath(tmp_path / "ray.log")
            ]
            terminal = [
                h
                for h in logger.handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            ]
            assert len(ours) == 1 and not terminal and not logger.propagate
        text = (tmp_path / "ray.log").read_text()
        assert "snapshotting is slow" in text and "creating tables" in text
    finally:
        logging.captureWarnings(False)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            for h in logger.handlers[:]:
                logger.removeHandler(h)
                if h not in handlers:
                    h.close()
            for h in handlers:
                logger.addHandler(h)
            logger.propagate = propagate


def test_validate_with_a_warm_name_cache_imports_neither_torch_nor_timm(tmp_path: Path) -> None:
    env = {**os.environ, "LVMBENCH_CACHE": str(tmp_path)}
    code = (
        "import sys\n"
        "import orchestrator.cli as cli\n"
        "code = cli.main(['validate', 'sweeps/quickstart.yaml'])\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'ray', 'mlflow') if m in sys.modules)\n"
        "print('CODE', code, 'HEAVY', heavy)\n"
    )
    runs = [
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        for _ in range(2)
    ]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr[-2000:]
    # The first run reads timm's registry (and writes the cache); the second reads the cache.
    assert "CODE 0 HEAVY ['timm', 'torch']" in runs[0].stdout, runs[0].stdout[-500:]
    assert "CODE 0 HEAVY []" in runs[1].stdout, runs[1].stdout[-500:]
    assert [p.name.split("-")[0] for p in tmp_path.glob("*-models.json")] == ["timm"]


def test_name_cache_is_per_installed_version_and_survives_a_broken_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainables.models import installed as installed_names

    monkeypatch.setenv("LVMBENCH_CACHE", str(tmp_path))
    reads: list[int] = []

    def read() -> list[str]:
        reads.append(1)
        return ["b_net", "a_net"]

    assert installed_names.cached_names("timm", "test", read) == {"a_net", "b_net"}
    assert installed_names.cached_names("timm", "test", read) == {"a_net", "b_net"}
    assert len(reads) == 1  # the second came from the file
    (path,) = tmp_path.glob("timm-*-test.json")
    assert path.name.startswith(f"timm-{importlib.metadata.version('timm')}-")
    path.write_text("[not json", encoding="utf-8")
    assert installed_names.cached_names("timm", "test", read) == {"a_net", "b_net"}
    assert len(reads) == 2  # a broken file is read again from the library, and rewritten
    assert json.loads(path.read_text(encoding="utf-8")) == ["a_net", "b_net"]


def test_unknown_names_are_still_refused_from_the_cache(tmp_path: Path) -> None:
    env = {**os.environ, "LVMBENCH_CACHE": str(tmp_path)}
    code = (
        "from trainables.models.names import check_model_name\n"
        "from trainables.config import OptimConfig\n"
        "check_model_name('resnet10t')\n"
        "for bad in ('resnet10x', 'vit_tiny_patch16_224x.augreg'):\n"
        "    try:\n"
        "        check_model_name(bad)\n"
        "    except ValueError as err:\n"
        "        print('REFUSED', err)\n"
        "try:\n"
        "    OptimConfig(name='adamww')\n"
        "except ValueError as err:\n"
        "    print('REFUSED', 'adamw' in str(err))\n"
    )
    for _ in range(2):  # cold, then from the cache
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert "did you mean resnet10t" in out.stdout
        assert "did you mean vit_tiny_patch16_224" in out.stdout
        assert "REFUSED True" in out.stdout


def test_summary_prints_an_mlflow_command_this_shell_can_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from orchestrator.driver.run_summary import mlflow_command

    # A `make run` user: the venv's bin folder is not on the PATH.
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    command = mlflow_command()
    assert command != "mlflow" or shutil.which("mlflow")
    out = subprocess.run(
        [*command.split(" "), "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "version" in out.stdout, (command, out.stderr[-500:])
    # The venv's script, named as the shell finds it from here.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:/usr/bin:/bin")
    assert mlflow_command() == "mlflow"


def test_the_command_ends_its_process_after_the_exit_hooks() -> None:
    # What `python -m orchestrator` does after `main`: exit hooks, flushed streams, the code.
    out = run_python(
        "import atexit, sys\n"
        "from orchestrator.cli import end_process\n"
        "atexit.register(lambda: print('hook ran', flush=True))\n"
        "print('written', end='')\n"
        "end_process(3)\n"
        "print('not reached')\n"
    )
    assert out.returncode == 3, out.stderr
    assert out.stdout == "writtenhook ran\n"


def test_a_running_thread_gets_the_ordinary_exit() -> None:
    out = run_python(
        "import threading, time\n"
        "from orchestrator.cli import end_process\n"
        "t = threading.Thread(target=lambda: (time.sleep(0.5), print('thread done', flush=True)))\n"
        "t.start()\n"
        "end_process(0)\n"
        "print('returned', flush=True)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["returned", "thread done"]
