"""The record that reruns a trial: its resolved config as YAML and the command that runs it again.

Every trial's resolved config (its searched values filled in, whatever drew them: a grid, a
seeded random draw, Optuna) is written by the driver as a one-trial sweep file,
`<output>/_rerun/<sweep>__<trial_id>.yaml`, and the trial's `rerun` column (an MLflow tag
`lvmbench.rerun`) is the command that runs it again in one process:

    python -m orchestrator trial <output>/_rerun/<sweep>__<trial_id>.yaml --output <output>

The same YAML is the trial's `config/yaml` column and its MLflow artifact `config.yaml`. A trial
of a later stage (`start:`, the earlier stage's checkpoint) is written without its `start`: the
file says so in a comment, and the rerun trains from the config's own weights.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

RERUN_DIR = "_rerun"
# Set per trial by the runner; not sweep-file keys.
_NOT_IN_FILE = ("start",)


def config_yaml(config: dict[str, Any]) -> str:
    """The trial's resolved config as a one-trial sweep file (YAML)."""
    kept = {k: v for k, v in config.items() if k not in _NOT_IN_FILE}
    head = (
        "# The resolved config of one trial: `python -m orchestrator trial THIS_FILE` reruns it.\n"
    )
    start = config.get("start")
    if start:
        head += (
            f"# It started from stage {start.get('stage')!r}'s checkpoint {start.get('checkpoint')}"
            " (start: is set per trial by a stage; this file trains from its own weights).\n"
        )
    return head + yaml.safe_dump(kept, sort_keys=False)


def rerun_path(output: Path, sweep_name: str, trial_id: str) -> Path:
    return Path(output).resolve() / RERUN_DIR / f"{sweep_name}__{trial_id}.yaml"


def rerun_command(output: Path, sweep_name: str, trial_id: str) -> str:
    path = rerun_path(output, sweep_name, trial_id)
    out = Path(output).resolve()
    return f"python -m orchestrator trial {shlex.quote(str(path))} --output {shlex.quote(str(out))}"


def record_rerun(
    output: Path, sweep_name: str, trial_id: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Write the trial's rerun file; returns its `trials` columns (`rerun`, `config/yaml`)."""
    text = config_yaml(config)
    path = rerun_path(output, sweep_name, trial_id)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return {"rerun": rerun_command(output, sweep_name, trial_id), "config/yaml": text}
