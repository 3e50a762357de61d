"""The registry of metric names: each producing module declares its keys' type, unit and meaning.

A module that produces flat metrics calls `declare(__name__, {...})` at import time, beside the
code that computes them; a module that produces table rows calls `declare_table`. The Parquet sink
types its columns from here (a key that is null on a CPU and text on a GPU must not split a
table), the report takes units from here, and `make docs` writes the metric tables of
`docs/profilers-and-metrics.md` from here.

Lookups accept the two derived forms a trial produces: tagged copies (`<tag>/<key>`, from a
profile re-run after pruning or a LoRA merge: `merged/flops/fwd_gmacs`) and keyed families
declared with a trailing `*` (`model/size_mb_*`).

Profilers import nothing from the rest of lvmbench; `trainables.registry.load_metric_declarations`
imports every producing module so the registry is complete. That takes seconds (torch, timm, peft),
so a process that only writes rows (the sweep's driver) reads `metric_catalog.json` instead
(`load_catalog`): every declaration, written by `make docs` and checked current by the tests. A
module's own declaration, where it is imported, replaces its catalog entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

F, INT, S, B = "float64", "int64", "string", "bool"
TYPES = (F, INT, S, B)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # one of TYPES: the Parquet column type
    unit: str
    description: str
    module: str  # the module that produces it
    from_catalog: bool = False  # read from metric_catalog.json, not declared in this process


_METRICS: dict[str, MetricSpec] = {}
_TABLES: dict[str, dict[str, MetricSpec]] = {}
# metric_spec's answers: the sinks ask for every column of every row (tens of thousands of calls
# per sweep, each a scan of the families on a miss). Emptied whenever a declaration changes.
_SPEC_CACHE: dict[str, MetricSpec | None] = {}


def _specs(module: str, entries: dict[str, tuple[str, str, str]]) -> dict[str, MetricSpec]:
    out = {}
    for name, (typ, unit, description) in entries.items():
        if typ not in TYPES:
            raise ValueError(f"metric {name!r} of {module}: type {typ!r} is not one of {TYPES}")
        out[name] = MetricSpec(name, typ, unit, description, module)
    return out


def _add(target: dict[str, MetricSpec], specs: dict[str, MetricSpec], what: str) -> None:
    _SPEC_CACHE.clear()
    for name, spec in specs.items():
        old = target.get(name)
        if old is not None and old.from_catalog:
            target[name] = spec
            continue
        if old is not None and (old.type, old.unit) != (spec.type, spec.unit):
            raise ValueError(
                f"{what} {name!r} declared by {spec.module} as {spec.type} [{spec.unit}] but by "
                f"{old.module} as {old.type} [{old.unit}]"
            )
        target.setdefault(name, spec)


def declare(module: str, entries: dict[str, tuple[str, str, str]]) -> dict[str, MetricSpec]:
    """Register flat metric keys: {name: (type, unit, description)}. Returns the specs."""
    specs = _specs(module, entries)
    _add(_METRICS, specs, "metric")
    return specs


def declare_table(
    table: str, module: str, entries: dict[str, tuple[str, str, str]]
) -> dict[str, MetricSpec]:
    """Register the columns of a table a module writes rows for (`latency`, `flops`, ...)."""
    specs = _specs(module, entries)
    _add(_TABLES.setdefault(table, {}), specs, f"column of table {table!r}")
    return specs


def _lookup(key: str) -> MetricSpec | None:
    spec = _METRICS.get(key)
    if spec is not None:
        return spec
    for name, family in _METRICS.items():
        if name.endswith("*") and key.startswith(name[:-1]):
            return family
    return None


def metric_spec(key: str) -> MetricSpec | None:
    """The declaration behind `key`, also for `<tag>/<key>` and keyed families; None if unknown."""
    if key in _SPEC_CACHE:
        return _SPEC_CACHE[key]
    spec = _lookup(key)
    if spec is None and "/" in key:
        spec = _lookup(key.split("/", 1)[1])
    _SPEC_CACHE[key] = spec
    return spec


def metric_type(key: str) -> str | None:
    spec = metric_spec(key)
    return spec.type if spec else None


def metric_unit(key: str) -> str | None:
    spec = metric_spec(key)
    return spec.unit if spec else None


def registered(*, declared_only: bool = False) -> dict[str, MetricSpec]:
    """Every known flat metric, by name (import the producers or `load_catalog` first);
    `declared_only`: leave out what came from the catalog alone."""
    return {n: s for n, s in sorted(_METRICS.items()) if not (declared_only and s.from_catalog)}


def registered_tables(*, declared_only: bool = False) -> dict[str, dict[str, MetricSpec]]:
    """Every known table with its columns."""
    return {
        t: {n: s for n, s in cols.items() if not (declared_only and s.from_catalog)}
        for t, cols in sorted(_TABLES.items())
    }


def table_types(table: str) -> dict[str, str]:
    return {name: spec.type for name, spec in _TABLES.get(table, {}).items()}


CATALOG = Path(__file__).with_name("metric_catalog.json")


def catalog_json() -> str:
    """Every declaration of this process as the text of `metric_catalog.json` (`make docs`)."""

    def rows(specs: dict[str, MetricSpec]) -> dict[str, list[str]]:
        # Only what this process declared: a stale catalog entry must not outlive its declaration.
        return {
            n: [s.type, s.unit, s.description, s.module]
            for n, s in sorted(specs.items())
            if not s.from_catalog
        }

    doc = {
        "generated_by": "scripts/gen_docs.py (make docs) from every declare()/declare_table()",
        "metrics": rows(_METRICS),
        "tables": {t: rows(cols) for t, cols in sorted(_TABLES.items())},
    }
    return json.dumps(doc, indent=1, ensure_ascii=False) + "\n"


def load_catalog(path: Path = CATALOG) -> None:
    """Register every declaration in `path` that this process has not declared itself."""
    doc = json.loads(path.read_text(encoding="utf-8"))

    def add(target: dict[str, MetricSpec], entries: dict[str, list[str]]) -> None:
        _SPEC_CACHE.clear()
        for name, (typ, unit, description, module) in entries.items():
            if name not in target:
                target[name] = MetricSpec(name, typ, unit, description, module, True)

    add(_METRICS, doc["metrics"])
    for table, columns in doc["tables"].items():
        add(_TABLES.setdefault(table, {}), columns)
