"""The sweep file: parse (yaml.safe_load), validate (pydantic), and report errors by key path.

A sweep file is a `TrialConfig` (every key a trial sees) plus the sweep-level keys below. Every
key has a default; unknown keys, wrong types and unknown names are errors raised as `SweepError`
before Ray starts, so the CLI can exit 2 having written nothing.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from trainables.trial_config import Strict, TrialConfig

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")


class SweepError(ValueError):
    """A sweep file that cannot run; the message names the key path, the value and the fix."""


class SearchSpec(Strict):
    """One dimension of the search: exactly one of the kinds."""

    grid: list[Any] | None = Field(None, description="every value, crossed with other grids")
    choice: list[Any] | None = Field(None, description="one value drawn per sample")
    uniform: tuple[float, float] | None = Field(None, description="[low, high]")
    loguniform: tuple[float, float] | None = Field(None, description="[low, high], low > 0")
    randint: tuple[int, int] | None = Field(None, description="[low, high) integers")

    @model_validator(mode="after")
    def _exactly_one(self) -> SearchSpec:
        given = [k for k in SEARCH_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of {', '.join(SEARCH_KINDS)} (got {', '.join(given) or 'none'})"
            )
        kind = given[0]
        value = getattr(self, kind)
        if kind in ("grid", "choice") and not value:
            raise ValueError(f"{kind} is empty: list at least one value")
        if kind in ("uniform", "loguniform", "randint") and not value[0] < value[1]:
            raise ValueError(f"{kind} needs low < high, got {list(value)}")
        if kind == "loguniform" and value[0] <= 0:
            raise ValueError(f"loguniform needs low > 0, got {value[0]}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SEARCH_KINDS if getattr(self, k) is not None)

    @property
    def value(self) -> Any:
        return getattr(self, self.kind)


class AshaConfig(Strict):
    """Early stopping of weak trials (Ray Tune's ASHA); needs num_samples or grids to matter."""

    type: Literal["asha"] = "asha"
    metric: str = "val/acc"
    mode: Literal["max", "min"] = "max"
    grace_period: int = Field(1, ge=1, description="epochs before a trial can be stopped")
    reduction_factor: float = Field(3.0, gt=1)


class ResourcesConfig(Strict):
    cpu: float = Field(1.0, gt=0, description="CPU cores per trial (also torch threads)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions share a GPU")


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(
        None, description="None = MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db"
    )


class SweepConfig(TrialConfig):
    search: dict[str, SearchSpec] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1, description="repeats of the grid (random spaces: draws)")
    scheduler: AshaConfig | None = None
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="retries of a failed trial")
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    stages: list[dict[str, Any]] | None = Field(
        None, description="optional multi-stage sweep (see README: stages)"
    )

    def trial_dict(self) -> dict[str, Any]:
        """The part of the sweep a trial sees, as plain JSON-able data."""
        keys = set(TrialConfig.model_fields)
        return self.model_dump(mode="json", include=keys)


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        path = prefix + ".".join(str(p) for p in e["loc"] if p not in ("function-after",))
        if e["type"] == "extra_forbidden":
            parent = e["loc"][:-1]
            accepted = _accepted_keys(parent)
            lines.append(
                f"{path}: unknown key"
                + (f" (accepted here: {', '.join(accepted)})" if accepted else "")
            )
            continue
        msg = e["msg"].removeprefix("Value error, ")
        shown = e.get("input")
        value = "" if isinstance(shown, dict) else f" (got {shown!r})"
        lines.append(f"{path or '<top level>'}: {msg}{value}")
    return "\n".join(lines)


def _accepted_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = SweepConfig
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(model.model_fields)


def _model_of(annotation: Any) -> Any:
    from typing import get_args

    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def parse_sweep_text(
    text: str, *, source: str = "<sweep>", default_name: str = "sweep"
) -> SweepConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SweepError(f"{source}: malformed YAML{where}: {problem}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SweepError(
            f"{source}: a sweep file is one YAML mapping (key: value), got {type(data).__name__}"
        )
    data.setdefault("name", default_name)
    return validate_sweep_dict(data, source=source)


def load_sweep(path: str | Path) -> SweepConfig:
    """Read, validate and resolve a sweep file; relative paths resolve against the current directory."""
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"{path}: no such sweep file")
    return parse_sweep_text(
        path.read_text(encoding="utf-8"), source=str(path), default_name=path.stem
    )


def validate_sweep_dict(data: dict[str, Any], *, source: str = "<sweep>") -> SweepConfig:
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise SweepError(f"{source}: invalid sweep file\n{format_validation_error(err)}") from err
    _check_search(sweep, source)
    if sweep.stages:
        from orchestrator.stages import build_stages

        build_stages(sweep, source=source)
    # Relative paths are relative to where the user runs the command; Ray trials run elsewhere.
    return sweep.resolve_paths(Path.cwd())


def _check_search(sweep: SweepConfig, source: str) -> None:
    """Every searched key must exist in a trial's config, and every listed value must validate."""
    base = sweep.trial_dict()
    problems = []
    for key, spec in sweep.search.items():
        where = f"search.{key}"
        if not _has_path(base, key):
            problems.append(
                f"{where}: {key!r} is not a trial key (e.g. optim.lr, lora.rank, model.name)"
            )
            continue
        values = spec.value if spec.kind in ("grid", "choice") else list(spec.value)
        for i, value in enumerate(values):
            trial = copy.deepcopy(base)
            set_path(trial, key, value)
            try:
                TrialConfig.model_validate(trial)
            except ValidationError as err:
                label = f"{where}.{spec.kind}[{i}]"
                problems.append(f"{label}: {format_validation_error(err)}")
    if problems:
        raise SweepError(f"{source}: invalid search space\n" + "\n".join(problems))


def _has_path(data: dict[str, Any], dotted: str) -> bool:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def get_path(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


SMOKE_BATCH_SIZE = 4


def apply_smoke(sweep: SweepConfig) -> SweepConfig:
    """--smoke: one epoch of a few small batches on a small subset; the model and search stay.

    Batches of at most 4 and latency at one point (the smallest batch, the first input size): a
    ViT-B at 224 must get through in minutes on 2 CPU cores.
    """
    out = sweep.model_copy(deep=True)
    out.smoke = True
    out.optim.epochs = 1
    out.optim.batch_size = min(out.optim.batch_size, SMOKE_BATCH_SIZE)
    out.optim.max_train_batches = min(out.optim.max_train_batches or 3, 3)
    out.optim.max_val_batches = min(out.optim.max_val_batches or 2, 2)
    out.dataset.subset = min(out.dataset.subset or 128, 128)
    if out.profilers.latency is not None:
        out.profilers.latency.warmup = min(out.profilers.latency.warmup, 1)
        out.profilers.latency.repeats = min(out.profilers.latency.repeats, 3)
        out.profilers.latency.batch_sizes = [min(out.profilers.latency.batch_sizes)]
        if out.profilers.latency.input_sizes:
            out.profilers.latency.input_sizes = out.profilers.latency.input_sizes[:1]
    if out.profilers.flops is not None and out.profilers.flops.input_sizes:
        out.profilers.flops.input_sizes = out.profilers.flops.input_sizes[:1]
    return out


def grid_size(sweep: SweepConfig) -> int:
    return math.prod(len(s.grid) for s in sweep.search.values() if s.grid is not None)
