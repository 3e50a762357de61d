"""The table contract the sinks write and the report reads, and the Parquet tables themselves.

The contract: the table names, the key columns of every row, which columns name the profile a
row belongs to, the best-of-trial summaries, and each column's unit (the metric registry's).

Parquet tables: a directory per table, one part file per trial, one schema across all parts.

`pandas.read_parquet("<output>/epochs")` infers the schema from one part file, so every part of a
table must carry the same columns with the same types. `PartitionedTable` keeps the union of
columns; when a new column (or a wider type) shows up, it rewrites the table's other parts once.
Parts are written atomically (hidden tmp file + rename); pyarrow ignores the hidden names.

Several sweeps may write into one output folder at once (their parts differ: sweep + trial), so a
schema change is one critical section across processes: an exclusive `fcntl` lock on the table's
hidden `.lock` file around every part write, and the table-wide schema in a hidden `.schema.json`
that each writer merges before it writes, so no writer drops a column another one added.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from profilers.metric_registry import load_catalog, metric_type
from trainables.config import TrialConfig
from trainables.registry import OPTIONAL_SECTIONS, TRAINABLE_SECTIONS

# Column types come from the metric registry: every producer's declarations, read from the
# catalog (importing the producers would cost the driver seconds of torch, timm and peft).
load_catalog()

SCHEMA_VERSION = 1

# Table names: the two every sweep writes, and those trainables send rows for.
EPOCHS = "epochs"  # one row per trial-epoch: params and the epoch's metrics
TRIALS = "trials"  # one row per trial: params, status, facts, last epoch, best-of, trial-end facts
LATENCY = "latency"  # trial x tag x input size x batch size x precision
FLOPS = "flops"  # trial x tag x input size
TRAIN_BENCH = "train_bench"  # bench trainable: batch size x precision -> step times
SENSITIVITY = "sensitivity"  # prune_recover: layer x ratio -> accuracy drop
WEIGHTS = "weights"  # prune_recover: layer x phase -> weight histogram bins
PRUNED_LAYERS = "pruned_layers"  # prune_recover: weights per layer before vs non-zero after
TABLES = (EPOCHS, TRIALS, LATENCY, FLOPS, TRAIN_BENCH, SENSITIVITY, WEIGHTS, PRUNED_LAYERS)

# Every row of every table: which sweep, which trial (and `epoch` in `epochs`).
KEY_COLUMNS = ("sweep", "trial_id")
EPOCH_KEY = "epoch"
# Which profile of a trial a row of the other tables belongs to: the same model profiled before
# and after a change carries a `tag` (LoRA's "merged", prune_recover's "dense"), weight histograms
# a `phase`. A trial that sends rows of a profile again (a restored trial re-runs its static
# profile) replaces that profile's rows; rows of its other profiles stay.
PROFILE_COLUMNS = ("tag", "phase")

# Best-of-trial summaries in `trials`, stored as `best/<metric>`: metric -> "max" or "min"; the
# epoch of the best `val/acc` as `best/epoch`.
BEST_PREFIX = "best/"
BEST_OF = {"val/acc": "max", "val/f1_macro": "max", "val/loss": "min", "train/acc": "max"}


def unit(column: str, table: str | None = None) -> str | None:
    """A column's unit, from the metric registry (None: not declared)."""
    from profilers.metric_registry import metric_unit, registered_tables

    if table is not None and table not in (EPOCHS, TRIALS):
        spec = registered_tables().get(table, {}).get(column)
        return spec.unit if spec else None
    return metric_unit(column)


# Columns every row of every table starts with.
BASE_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "sweep": pa.string(),
    "trial_id": pa.string(),
}


def _leaf_type(annotation: Any) -> pa.DataType:
    args = [a for a in get_args(annotation) if a is not type(None)]
    origin = get_origin(annotation)
    if origin is not None and str(origin) in ("typing.Union", "<class 'types.UnionType'>"):
        if len(args) == 1:
            return _leaf_type(args[0])
        return pa.string()  # e.g. pretrained: bool | str
    if str(origin) == "typing.Literal":
        return pa.string()
    if annotation is bool:
        return pa.bool_()
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    return pa.string()  # str, lists, dicts (JSON-encoded)


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _submodel(arg)
        if found is not None:
            return found
    return None


# Set per trial by the stage runner, recorded as `start/*` columns of `trials`: where a trial
# starts from is not a parameter the user searched.
NOT_PARAMS = frozenset({"start"})


def param_columns(model: type[BaseModel] = TrialConfig, prefix: str = "") -> dict[str, pa.DataType]:
    """Dotted-key columns for a trial's config, typed from the pydantic schema."""
    columns: dict[str, pa.DataType] = {}
    for name, field in model.model_fields.items():
        if not prefix and name in NOT_PARAMS:
            continue
        sub = _submodel(field.annotation)
        if sub is not None:
            columns.update(param_columns(sub, f"{prefix}{name}."))
        else:
            columns[f"{prefix}{name}"] = _leaf_type(field.annotation)
    return columns


PARAM_COLUMNS = param_columns()


def flatten_params(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config (validated, so types are coerced) as dotted-key columns; the optional
    sections its trainable does not read (`prune.*` of a `train` trial) are null."""
    dumped = TrialConfig.model_validate(config).model_dump(mode="json")
    used = TRAINABLE_SECTIONS.get(dumped["trainable"], OPTIONAL_SECTIONS)
    for section in OPTIONAL_SECTIONS:
        if section not in used:
            dumped[section] = None
    out: dict[str, Any] = {}
    for key, typ in PARAM_COLUMNS.items():
        node: Any = dumped
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and pa.types.is_string(typ) and not isinstance(node, str):
            node = json.dumps(node, sort_keys=True)
        out[key] = node
    return out


ARROW_TYPES = {
    "float64": pa.float64(),
    "int64": pa.int64(),
    "string": pa.string(),
    "bool": pa.bool_(),
}


def _value_type(key: str, value: Any) -> pa.DataType | None:
    # Registered metrics have one type whatever a trial produced (a driver version that is null
    # on CPU and text on GPU must not split the table into float and string parts).
    known = metric_type(key)
    if known is not None:
        return ARROW_TYPES[known]
    if value is None:
        return None
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int | float):
        # Metrics are float64 whatever Python type a step produced, so parts agree.
        return pa.int64() if isinstance(value, int) and "/" not in key else pa.float64()
    return pa.string()


def _wider(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    numeric = {pa.int32(), pa.int64(), pa.float64()}
    if a in numeric and b in numeric:
        return pa.float64()
    return pa.string()


def _coerce(value: Any, typ: pa.DataType) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value != value:  # NaN stays a float (not a null)
        return value if pa.types.is_floating(typ) else None
    if pa.types.is_string(typ) and not isinstance(value, str):
        return json.dumps(value) if isinstance(value, list | dict) else str(value)
    return value


def safe_part_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name)


class PartitionedTable:
    """One table: `<root>/<name>/<part>.parquet`, one part per trial."""

    SCHEMA_FILE = ".schema.json"
    LOCK_FILE = ".lock"

    def __init__(self, root: Path, name: str, fixed: dict[str, pa.DataType] | None = None) -> None:
        self.dir = root / name
        self.schema: dict[str, pa.DataType] = dict(BASE_COLUMNS)
        self.schema.update(fixed or {})
        self._schema_stamp: tuple[int, int] | None = None
        if self.dir.is_dir():
            for part in sorted(self.dir.glob("*.parquet")):
                self._merge(pq.read_schema(part))

    def _merge(self, fields: Any) -> bool:
        """Widen the schema by `fields` (name -> type pairs or pyarrow fields); True if it grew."""
        changed = False
        for field in fields:
            name, typ = (field.name, field.type) if isinstance(field, pa.Field) else field
            old = self.schema.get(name)
            new = typ if old is None else _wider(old, typ)
            if new != old:
                self.schema[name] = new
                changed = True
        return changed

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / self.LOCK_FILE, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _schema_path(self) -> Path:
        return self.dir / self.SCHEMA_FILE

    def _load_shared_schema(self) -> None:
        """Columns other writers (other sweeps, other processes) added since we last looked."""
        path = self._schema_path()
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._schema_stamp:
            return
        stored = json.loads(path.read_text(encoding="utf-8"))
        self._merge((k, pa.type_for_alias(v)) for k, v in stored.items())
        self._schema_stamp = stamp

    def _save_shared_schema(self) -> None:
        path = self._schema_path()
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(json.dumps({k: str(t) for k, t in self.schema.items()}), encoding="utf-8")
        os.replace(tmp, path)
        st = path.stat()
        self._schema_stamp = (st.st_mtime_ns, st.st_size)

    def part_path(self, part: str) -> Path:
        return self.dir / f"{safe_part_name(part)}.parquet"

    def read_part(self, part: str) -> list[dict[str, Any]]:
        path = self.part_path(part)
        return pq.read_table(path).to_pylist() if path.exists() else []

    def write_part(self, part: str, rows: list[dict[str, Any]]) -> Path:
        target = self.part_path(part)
        with self._locked():
            self._load_shared_schema()
            new: list[tuple[str, pa.DataType]] = []
            for row in rows:
                for key, value in row.items():
                    typ = _value_type(key, value)
                    # A column seen only as null so far gets a float type until a value says
                    # otherwise.
                    if key not in self.schema or typ is not None:
                        new.append((key, typ or self.schema.get(key) or pa.float64()))
            changed = self._merge(new)
            if changed:
                for other in self.dir.glob("*.parquet"):
                    if other != target:
                        self._write(other, pq.read_table(other).to_pylist())
            if changed or self._schema_stamp is None:
                self._save_shared_schema()
            self._write(target, rows)
        return target

    def _write(self, path: Path, rows: list[dict[str, Any]]) -> None:
        schema = pa.schema([pa.field(k, t) for k, t in self.schema.items()])
        columns = {
            k: pa.array([_coerce(r.get(k), t) for r in rows], type=t)
            for k, t in self.schema.items()
        }
        table = pa.Table.from_pydict(columns, schema=schema)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, path)
