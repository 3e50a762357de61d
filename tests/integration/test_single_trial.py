"""`python -m orchestrator trial`: one trial in-process, without Ray (hidden from the import
system here), its rows in the same Parquet tables a sweep writes; bad picks exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.driver.schema import validate_sweep_dict
from orchestrator.driver.single_trial import pick_trial

ROOT = Path(__file__).resolve().parents[2]

# Runs `python -m orchestrator ARGS` with the named top-level packages made unimportable, then
# prints which of their modules got loaded anyway.
HIDDEN_RUN = textwrap.dedent(
    """
    import atexit, runpy, sys
    hidden = sys.argv[1].split(",")
    # None in sys.modules: `import ray` raises ImportError, importlib.util.find_spec says None.
    for name in hidden:
        sys.modules[name] = None

    def loaded():
        mods = [m for m, mod in sys.modules.items() if mod is not None and m.split(".")[0] in hidden]
        print("LOADED", sorted(mods), flush=True)

    # At exit: the command ends its process itself (`orchestrator.cli.end_process`) after the
    # exit hooks, so a `finally` here would never run.
    atexit.register(loaded)
    sys.argv = ["orchestrator", *sys.argv[2:]]
    runpy.run_module("orchestrator", run_name="__main__", alter_sys=True)
    """
)


def _run_hidden(hidden: str, *args: str, locks: Path, timeout: int = 600) -> str:
    # A lock directory of its own: other processes on this machine must not hold its timed points.
    env = {**os.environ, "LVMBENCH_LOCK_DIR": str(locks)}
    proc = subprocess.run(
        [sys.executable, "-c", HIDDEN_RUN, hidden, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "LOADED []" in out, out[-3000:]
    return out


TINY_SWEEP = """
name: tiny_trial
trainable: train
model: {name: vit_tiny_patch16_224, img_size: 16, kwargs: {depth: 1, patch_size: 8, embed_dim: 32, num_heads: 2}}
dataset: {name: digits, subset: 64}
optim: {batch_size: 16, epochs: 2}
precision: fp32
search:
  optim.lr: {grid: [1.0e-3, 3.0e-3]}
  optim.weight_decay: {uniform: [0.0, 0.1]}
profilers: {latency: {batch_sizes: [1], repeats: 3, warmup: 1}}
resources: {cpu: 1}
"""


def test_trial_runs_without_ray_or_mlflow(tmp_path: Path) -> None:
    sweep = tmp_path / "tiny.yaml"
    sweep.write_text(TINY_SWEEP)
    out = tmp_path / "out"
    log = _run_hidden(
        "ray,mlflow", "trial", str(sweep), "--index", "1", "--output", str(out), locks=tmp_path
    )
    assert "mlflow: not logged" in log and "TERMINATED" in log
    trials = pd.read_parquet(out / "trials")
    assert len(trials) == 1
    row = trials.iloc[0]
    assert row["status"] == "TERMINATED" and row["epochs_completed"] == 2
    assert row["optim.lr"] == 3.0e-3 and 0.0 <= row["optim.weight_decay"] <= 0.1
    assert row["trial_id"].endswith("_00001") and row["params/total"] > 0
    epochs = pd.read_parquet(out / "epochs")
    assert list(epochs["epoch"]) == [1, 2] and epochs["val/acc"].notna().all()
    assert len(pd.read_parquet(out / "latency")) == 1
    ckpt = out / "_trials" / f"tiny_trial__{row['trial_id']}" / "checkpoint"
    assert any(ckpt.iterdir())


@pytest.mark.slow
def test_quickstart_trial_index_1_without_ray(tmp_path: Path, mlflow_uri: str) -> None:
    out = tmp_path / "out"
    args = ("trial", "sweeps/quickstart.yaml", "--index", "1", "--output", str(out))
    _run_hidden("ray", *args, locks=tmp_path)
    trials = pd.read_parquet(out / "trials")
    assert list(trials["model.name"]) == ["resnet18"] and list(trials["status"]) == ["TERMINATED"]
    assert trials.loc[0, "epochs_completed"] == 3
    assert len(pd.read_parquet(out / "epochs")) == 3
    import mlflow

    # An earlier test may have set mlflow's process-wide URI: read this test's store.
    mlflow.set_tracking_uri(mlflow_uri)
    runs = mlflow.search_runs(experiment_names=["quickstart"], search_all_experiments=False)
    trial_runs = runs[runs["tags.lvmbench.role"] == "trial"]
    assert len(trial_runs) == 1 and trial_runs.iloc[0]["status"] == "FINISHED"


def test_random_keys_are_drawn_per_index_within_their_range(tmp_path: Path) -> None:
    import yaml

    sweep = validate_sweep_dict(yaml.safe_load(TINY_SWEEP))
    first, second = pick_trial(sweep, 0), pick_trial(sweep, 1)
    assert (first["optim.lr"], second["optim.lr"]) == (1.0e-3, 3.0e-3)
    assert first["optim.weight_decay"] != second["optim.weight_decay"]
    assert pick_trial(sweep, 1) == second  # the same index draws the same values
    assert all(0.0 <= p["optim.weight_decay"] <= 0.1 for p in (first, second))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sweeps/quickstart.yaml", "--index", "2"], "--index 2: this sweep has 2 trial(s)"),
        (["sweeps/lora_ranks.yaml", "--stage", "nope"], "has the stages bench, lora"),
        (["sweeps/quickstart.yaml", "--stage", "bench"], "has no stages"),
        (["sweeps/seed_pretrain_finetune.yaml", "--stage", "finetune"], "only a sweep run"),
    ],
)
def test_bad_picks_exit_2_saying_why(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["trial", *args, "--smoke", "--output", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
