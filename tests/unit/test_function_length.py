"""The trial path reads in small steps: no function from the runner to the sinks is longer than
60 lines (runner -> trainable -> fit -> reporter -> sinks)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 60
TRIAL_PATH = (
    "orchestrator/driver/sweep_runner.py",
    "orchestrator/driver/single_trial.py",
    "orchestrator/workers/trial_runner.py",
    "orchestrator/workers/train_workers.py",
    "trainables/registry.py",
    "trainables/train.py",
    "trainables/finetune.py",
    "trainables/lora.py",
    "trainables/prune_recover.py",
    "trainables/bench.py",
    "trainables/loop/scope.py",
    "trainables/loop/setup.py",
    "trainables/loop/fit.py",
    "trainables/loop/epoch.py",
    "trainables/loop/profiling.py",
    "trainables/loop/reporting.py",
    "trainables/loop/auto_batch.py",
    "orchestrator/sinks/results.py",
    "orchestrator/sinks/parquet_rows.py",
    "orchestrator/sinks/mlflow_runs.py",
    "orchestrator/tables.py",
)


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_LINES
    ]


def test_no_function_in_the_trial_path_is_longer_than_60_lines() -> None:
    found = [f for name in TRIAL_PATH for f in long_functions(ROOT / name)]
    assert not found, "split these:\n" + "\n".join(found)


def test_the_check_sees_a_long_function(tmp_path: Path) -> None:
    lines = "\n".join(f"        x{i} = {i}" for i in range(MAX_LINES - 1))
    code = tmp_path / "code.py"
    code.write_text(f"class A:\n    def f(self):\n{lines}\n\n    def g(self):\n        x = 1\n")
    assert long_functions(code) == []  # 60 lines: allowed
    code.write_text(f"class A:\n    def f(self):\n{lines}\n        y = 0\n")
    assert long_functions(code) == [f"code.py:2 f ({MAX_LINES + 1} lines)"]
