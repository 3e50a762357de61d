"""The command line answers before it loads the heavy stack: `--help` imports neither torch nor Ray,
`validate` never starts Ray, and the help names the real MLflow default."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    assert "--tracking-uri" in out.stdout


def test_tracking_uri_help_names_the_real_default() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    text = " ".join(out.stdout.split())
    assert "MLFLOW_TRACKING_URI" in text
    assert "sqlite:///<cwd>/mlruns/mlflow.db" in text


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

    from orchestrator.run_summary import runs_link

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert runs_link(uri, "nothing_here") is None
    experiment_id = MlflowClient(uri).create_experiment("my_sweep")
    assert runs_link(uri, "my_sweep") == f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs"


def test_route_logs_sends_ray_and_mlflow_records_to_the_file(tmp_path: Path) -> None:
    import logging

    from orchestrator.sweep_runner import ROUTED_LOGGERS, route_logs

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
