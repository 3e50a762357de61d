"""The sweep file: parse (yaml.safe_load), validate (pydantic), and report errors by key path.

A sweep file is a `TrialConfig` (every key a trial sees) plus the sweep-level keys below, and an
optional `stages:` list of `StageSpec`. Every key has a default; unknown keys, wrong types and
unknown names are errors raised as `SweepError` before Ray starts, so the CLI can exit 2 having
written nothing. What the stages make together (merged sweeps, links between them) is checked
when `orchestrator/driver/stages.py` builds the plan.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from orchestrator.driver.dotted_keys import has_path, set_path
from trainables.config import StartConfig, Strict, TrialConfig

SEARCH_KINDS = ("grid", "choice", "uniform", "loguniform", "randint")
STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
SWEEP_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*$")
# Sweep keys a stage cannot set: stages do not nest, and the runner sets `stage` and `start`.
NOT_STAGE_KEYS = ("stages", "stage", "start")
# The custom pydantic error type of a stage key that is not a sweep key (see `StageSpec`).
UNKNOWN_STAGE_KEY = "unknown_stage_key"


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
    """What one trial asks Ray for: one process (`cpu`, `gpu`), or `workers` data-parallel
    processes with `cpu_per_worker` / `gpu_per_worker` each (a Ray Train TorchTrainer)."""

    cpu: float = Field(1.0, gt=0, description="CPU cores per trial (also torch threads)")
    gpu: float = Field(0.0, ge=0, description="GPUs per trial; fractions share a GPU")
    workers: int = Field(
        1, ge=1, description="training processes per trial; > 1 runs DDP under Ray Train"
    )
    cpu_per_worker: float | None = Field(
        None, gt=0, description="with workers > 1: CPU cores per worker (default 1)"
    )
    gpu_per_worker: float | None = Field(
        None, ge=0, description="with workers > 1: GPUs per worker (default 0)"
    )

    @model_validator(mode="after")
    def _one_form(self) -> ResourcesConfig:
        per_worker = [
            k for k in ("cpu_per_worker", "gpu_per_worker") if getattr(self, k) is not None
        ]
        # By value, not by "was it written": stages re-validate a dumped sweep, defaults included.
        defaults = {"cpu": 1.0, "gpu": 0.0}
        single = [k for k, v in defaults.items() if getattr(self, k) != v]
        if self.workers == 1 and per_worker:
            raise ValueError(
                f"{', '.join(per_worker)} needs workers > 1; for one worker use cpu / gpu"
            )
        if self.workers > 1 and single:
            raise ValueError(
                f"with workers: {self.workers}, give cpu_per_worker / gpu_per_worker instead of "
                f"{' / '.join(single)} (cpu / gpu are the one-worker form)"
            )
        return self

    @property
    def worker_cpu(self) -> float:
        """CPU cores each training process gets."""
        return self.cpu if self.workers == 1 else (self.cpu_per_worker or 1.0)

    @property
    def worker_gpu(self) -> float:
        """GPUs each training process gets."""
        return self.gpu if self.workers == 1 else (self.gpu_per_worker or 0.0)


class SearcherConfig(Strict):
    """How trials are drawn: written inside `search:` beside the searched keys (`search.algo`,
    `search.objectives`, `search.seed`, `search.n_startup_trials`); the schema keeps them here."""

    algo: Literal["auto", "random", "optuna"] = Field(
        "auto",
        description="auto: grids crossed, random kinds drawn (Ray Tune's basic generator); "
        "random: the same, named; optuna: Optuna's TPE sampler over the random kinds (no grid)",
    )
    objectives: dict[str, Literal["max", "min"]] | None = Field(
        None,
        description="metric -> max | min; optuna searches them (two or more: a Pareto front), "
        "and every search marks `pareto/front` in `trials`",
    )
    seed: int | None = Field(
        None, description="seeds the sampler: the same seed draws the same configs"
    )
    n_startup_trials: int | None = Field(
        None, ge=1, description="optuna: random trials before TPE models the results (Optuna's 10)"
    )

    @model_validator(mode="after")
    def _optuna_needs_objectives(self) -> SearcherConfig:
        if self.algo == "optuna" and not self.objectives:
            raise ValueError(
                "algo: optuna needs objectives, e.g. {val/acc: max, latency/b1_ms_p50: min}"
            )
        if self.n_startup_trials is not None and self.algo != "optuna":
            raise ValueError(f"n_startup_trials applies to algo: optuna, not {self.algo}")
        return self


# Keys of `search:` that configure the sampler rather than name a searched trial key.
SEARCHER_KEYS = tuple(SearcherConfig.model_fields)


class CostConfig(Strict):
    """Prices for `cost/usd`: a flat price per trial-hour, or per resource held (summed)."""

    usd_per_hour: float | None = Field(None, ge=0, description="dollars per trial-hour")
    usd_per_gpu_hour: float | None = Field(None, ge=0, description="dollars per GPU-hour held")
    usd_per_cpu_hour: float | None = Field(None, ge=0, description="dollars per CPU-core-hour held")

    @model_validator(mode="after")
    def _some_price(self) -> CostConfig:
        if all(getattr(self, k) is None for k in CostConfig.model_fields):
            raise ValueError("give usd_per_hour, or usd_per_gpu_hour / usd_per_cpu_hour")
        return self


class MlflowConfig(Strict):
    tracking_uri: str | None = Field(
        None, description="None = MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db"
    )


class StageSource(Strict):
    """`from:` of a stage: which earlier stage, ranked by what, matched on which keys."""

    stage: str = Field(description="name of an earlier stage")
    metric: str = Field("val/acc", description="metric that ranks the earlier stage's checkpoints")
    mode: Literal["max", "min"] = "max"
    match: list[str] | None = Field(
        None, description="keys whose values must agree (default: grid keys both stages search)"
    )


class StageSpec(Strict):
    """One entry of `stages:`: its name, where it starts from, and any sweep keys it sets itself.

    The sweep keys (`trainable`, `optim`, `search`, ...) are kept as written: `stages.py` merges
    them over the sweep's own (mappings key by key, `search: {key: null}` drops a searched key)
    and validates the result as a sweep.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(description="letters, digits, _ or -; the rows' `stage` column")
    from_: StageSource | None = Field(
        None,
        alias="from",
        description="start each trial from an earlier stage's best checkpoint: a stage name or "
        "{stage, metric, mode, match}",
    )

    @field_validator("name")
    @classmethod
    def _name_chars(cls, name: str) -> str:
        if not STAGE_NAME.match(name):
            raise ValueError("give each stage a name of letters, digits, _ or -")
        return name

    @field_validator("from_", mode="before")
    @classmethod
    def _stage_name_alone(cls, value: Any) -> Any:
        return {"stage": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _only_sweep_keys(self) -> StageSpec:
        accepted = stage_keys()
        for key in self.model_extra or {}:
            if key not in accepted:
                raise PydanticCustomError(
                    UNKNOWN_STAGE_KEY,
                    "unknown key",
                    {"key": key, "accepted": ", ".join(["name", "from", *accepted])},
                )
        return self

    @property
    def overrides(self) -> dict[str, Any]:
        """The sweep keys this stage sets, as written (a copy)."""
        return copy.deepcopy(dict(self.model_extra or {}))


class SweepConfig(TrialConfig):
    search: dict[str, SearchSpec] = Field(default_factory=dict)
    searcher: SearcherConfig = Field(
        default_factory=SearcherConfig,
        description="written as search.algo / search.objectives / search.seed / "
        "search.n_startup_trials (docs: search)",
    )
    cost: CostConfig | None = Field(None, description="prices: cost/usd per trial (absent: none)")
    num_samples: int = Field(1, ge=1, description="repeats of the grid (random spaces: draws)")
    scheduler: AshaConfig | None = None
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    max_concurrent_trials: int | None = Field(None, ge=1)
    max_failures: int = Field(0, ge=0, description="retries of a failed trial")
    isolation: Literal["reuse", "process"] = Field(
        "reuse",
        description="reuse: trials run one after another in reused worker processes, each from a "
        "clean start (fast: no new process per trial); process: a fresh process per trial",
    )
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    stages: list[StageSpec] | None = Field(
        None, description="optional: stages run in order, each a sweep of its own (docs: stages)"
    )

    @model_validator(mode="before")
    @classmethod
    def _searcher_keys_out_of_search(cls, data: Any) -> Any:
        # `search:` holds both the searched keys and how to draw them; a mapping under `seed`
        # searches the trial's own `seed`, a number seeds the sampler.
        if not isinstance(data, dict) or not isinstance(data.get("search"), dict):
            return data
        search = dict(data["search"])
        moved = {
            k: search.pop(k)
            for k in SEARCHER_KEYS
            # On re-validation (an assignment) a searched seed is already a SearchSpec, not a dict.
            if k in search and not (k == "seed" and not isinstance(search[k], int | float | str))
        }
        if not moved:
            return data
        searcher = data.get("searcher")
        return {
            **data,
            "search": search,
            "searcher": {**(searcher if isinstance(searcher, dict) else {}), **moved},
        }

    @model_validator(mode="after")
    def _searcher_fits_the_space(self) -> SweepConfig:
        grids = [k for k, s in self.search.items() if s.kind == "grid"]
        if self.searcher.algo == "optuna":
            if grids:
                raise ValueError(
                    f"search.algo: optuna draws every value; {', '.join(grids)} "
                    "use grid: write them as choice"
                )
            if not self.search:
                raise ValueError("search.algo: optuna needs at least one searched key")
            if self.scheduler is not None:
                raise ValueError(
                    "search.algo: optuna compares finished trials; drop scheduler (ASHA)"
                )
        return self

    @field_validator("name")
    @classmethod
    def _name_is_a_path_component(cls, name: str) -> str:
        # The name becomes a folder (Ray's experiment dir), a Parquet part name and an MLflow
        # experiment: nothing that could climb out of --output.
        if not SWEEP_NAME.match(name):
            raise ValueError(
                "a sweep name is letters, digits, -, _ and . (not first), e.g. lora_ranks; "
                "set `name:` in the file"
            )
        return name

    @field_validator("start")
    @classmethod
    def _start_is_set_per_trial(cls, start: StartConfig | None) -> StartConfig | None:
        if start is not None:
            raise ValueError(
                "start is set per trial by a stage's `from:`; to start from a file, set "
                "model.pretrained or finetune.checkpoint"
            )
        return start

    @model_validator(mode="after")
    def _workers_need_a_loader(self) -> SweepConfig:
        if self.resources.workers > 1 and self.dataset.on_device:
            raise ValueError(
                f"resources.workers: {self.resources.workers} shards the DataLoaders over the "
                "workers; dataset.on_device: true runs in one process: set on_device: false"
            )
        return self

    def trial_dict(self) -> dict[str, Any]:
        """The part of the sweep a trial sees, as plain JSON-able data."""
        keys = set(TrialConfig.model_fields)
        return self.model_dump(mode="json", include=keys)


def stage_keys() -> list[str]:
    """The sweep keys a stage may set over the sweep's."""
    return [k for k in SweepConfig.model_fields if k not in (*NOT_STAGE_KEYS, "name")]


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    lines = []
    for e in err.errors():
        loc = tuple(p for p in e["loc"] if p != "function-after")
        path = prefix + _key_path(loc)
        if e["type"] == UNKNOWN_STAGE_KEY:
            ctx = e.get("ctx") or {}
            lines.append(f"{path}.{ctx['key']}: unknown key (accepted here: {ctx['accepted']})")
            continue
        if e["type"] == "extra_forbidden":
            accepted = _accepted_keys(loc[:-1])
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


def _key_path(loc: tuple[Any, ...]) -> str:
    """`("stages", 1, "optim", "lr")` -> `stages[1].optim.lr`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _accepted_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = SweepConfig
    for part in loc:
        if isinstance(part, int):
            continue  # an item of a list: same model
        fields = getattr(model, "model_fields", {})
        field = fields.get(part) or next((f for f in fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` merges; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key]}, again at line {line}); "
                    "keep one",
                    key_node.start_mark,
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def parse_sweep_text(
    text: str,
    *,
    source: str = "<sweep>",
    default_name: str = "sweep",
    allow_empty: bool = True,
) -> SweepConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: safe
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SweepError(f"{source}: malformed YAML{where}: {problem}") from err
    if data is None:
        if not allow_empty:
            raise SweepError(
                f"{source}: the file is empty (no keys); write at least `name:` and `trainable:` "
                "(see sweeps/quickstart.yaml)"
            )
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
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SweepError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x} at offset "
            f"{err.start}); save the sweep file as UTF-8"
        ) from err
    return parse_sweep_text(text, source=str(path), default_name=path.stem, allow_empty=False)


def validate_sweep_dict(data: dict[str, Any], *, source: str = "<sweep>") -> SweepConfig:
    try:
        sweep = SweepConfig.model_validate(data)
    except ValidationError as err:
        raise SweepError(f"{source}: invalid sweep file\n{format_validation_error(err)}") from err
    _check_search(sweep, source)
    # Relative paths are relative to where the user runs the command; Ray trials run elsewhere.
    resolved = sweep.resolve_paths(Path.cwd())
    _check_paths(resolved, source)
    return resolved


# Sections whose keys name a local file or folder the trials read (checked on the driver).
PATH_SECTIONS = ("model", "finetune", "dataset")


def _path_problems(
    cfg: TrialConfig, where: str = "", skip: set[str] | frozenset[str] = frozenset()
) -> list[str]:
    """Local paths of one trial's config that do not exist, as `key: problem` lines."""
    problems = []
    pretrained = cfg.model.pretrained
    if "model" not in skip and isinstance(pretrained, str) and not Path(pretrained).is_file():
        problems.append(
            f"model.pretrained{where}: no checkpoint file at {pretrained} (give a safetensors or "
            "torch file, true for the hub's weights, or false)"
        )
    checkpoint = cfg.finetune.checkpoint
    if "finetune" not in skip and checkpoint and not Path(checkpoint).is_file():
        problems.append(f"finetune.checkpoint{where}: no checkpoint file at {checkpoint}")
    if "dataset" not in skip and cfg.dataset.name in ("imagefolder", "imagenet"):
        root = Path(cfg.dataset.root)
        missing = [str(root / s) for s in ("train", "val") if not (root / s).is_dir()]
        if missing:
            problems.append(
                f"dataset.root{where}: {cfg.dataset.name} reads class folders under "
                f"{root}/train and {root}/val; missing: {', '.join(missing)}"
            )
    return problems


def _check_paths(sweep: SweepConfig, source: str) -> None:
    """Missing checkpoints and image folders fail here, before Ray starts, not inside a trial."""
    searched = {k.split(".")[0] for k in sweep.search} & set(PATH_SECTIONS)
    problems = _path_problems(sweep, skip=searched)
    base = sweep.trial_dict()
    for key, spec in sweep.search.items():
        if key.split(".")[0] not in PATH_SECTIONS or spec.kind not in ("grid", "choice"):
            continue
        for i, value in enumerate(spec.value):
            trial = copy.deepcopy(base)
            set_path(trial, key, value)
            cfg = TrialConfig.model_validate(trial).resolve_paths(Path.cwd())
            problems += _path_problems(cfg, f" (search.{key}.{spec.kind}[{i}])")
    if problems:
        raise SweepError(f"{source}: missing files\n" + "\n".join(dict.fromkeys(problems)))


def _check_search(sweep: SweepConfig, source: str) -> None:
    """Every searched key must exist in a trial's config, and every listed value must validate."""
    base = sweep.trial_dict()
    problems = []
    for key, spec in sweep.search.items():
        where = f"search.{key}"
        if key.split(".")[0] == "start":
            problems.append(
                f"{where}: start is set per trial by a stage's `from:`, it cannot be searched"
            )
            continue
        if not has_path(base, key):
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
