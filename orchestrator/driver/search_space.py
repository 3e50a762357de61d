"""`search:` -> a Ray Tune param space, and the expanded trial list that `validate` prints."""

from __future__ import annotations

import copy
import itertools
import json
from typing import Any

from orchestrator.driver.dotted_keys import set_path
from orchestrator.driver.schema import SweepConfig


def tune_space(spec_kind: str, value: Any) -> Any:
    # Imported here: `expand` and `trial_config` serve `validate` and the Ray-free `trial` command.
    from ray import tune

    if spec_kind == "grid":
        return tune.grid_search(list(value))
    if spec_kind == "choice":
        return tune.choice(list(value))
    if spec_kind == "uniform":
        return tune.uniform(*value)
    if spec_kind == "loguniform":
        return tune.loguniform(*value)
    if spec_kind == "randint":
        return tune.randint(*value)
    raise ValueError(
        f"search kind {spec_kind!r} is not one of grid, choice, uniform, loguniform, randint"
    )


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """The trial config as a nested dict with Tune search spaces at the searched paths."""
    space = sweep.trial_dict()
    for key, spec in sweep.search.items():
        set_path(space, key, tune_space(spec.kind, spec.value))
    return space


def expand(sweep: SweepConfig) -> list[dict[str, Any]]:
    """The trials this sweep will run: grid values crossed, times num_samples; random draws shown
    as their distribution (Ray draws them when the trial starts)."""
    grid_keys = [k for k, s in sweep.search.items() if s.kind == "grid"]
    random_keys = {
        k: f"{s.kind}({json.dumps(s.value)})" for k, s in sweep.search.items() if s.kind != "grid"
    }
    combos = list(itertools.product(*(sweep.search[k].grid for k in grid_keys))) or [()]
    trials = []
    for sample in range(sweep.num_samples):
        for combo in combos:
            params = dict(zip(grid_keys, combo, strict=True)) | random_keys
            trials.append({"sample": sample, **params})
    return trials


def trial_config(sweep: SweepConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The concrete config of one trial (for tests and `validate`)."""
    config = copy.deepcopy(sweep.trial_dict())
    for key, value in params.items():
        set_path(config, key, value)
    return config
