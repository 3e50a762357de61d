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
imports every producing module so the registry is complete.
"""

from __future__ import annotations

from dataclasses import dataclass

F, INT, S, B = "float64", "int64", "string", "bool"
TYPES = (F, INT, S, B)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    type: str  # one of TYPES: the Parquet column type
    unit: str
    description: str
    module: str  # the module that produces it


_METRICS: dict[str, MetricSpec] = {}
_TABLES: dict[str, dict[str, MetricSpec]] = {}


def _specs(module: str, entries: dict[str, tuple[str, str, str]]) -> dict[str, MetricSpec]:
    out = {}
    for name, (typ, unit, description) in entries.items():
        if typ not in TYPES:
            raise ValueError(f"metric {name!r} of {module}: type {typ!r} is not one of {TYPES}")
        out[name] = MetricSpec(name, typ, unit, description, module)
    return out


def _add(target: dict[str, MetricSpec], specs: dict[str, MetricSpec], what: str) -> None:
    for name, spec in specs.items():
        old = target.get(name)
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
    spec = _lookup(key)
    if spec is None and "/" in key:
        spec = _lookup(key.split("/", 1)[1])
    return spec


def metric_type(key: str) -> str | None:
    spec = metric_spec(key)
    return spec.type if spec else None


def metric_unit(key: str) -> str | None:
    spec = metric_spec(key)
    return spec.unit if spec else None


def registered() -> dict[str, MetricSpec]:
    """Every declared flat metric, by name (import the producers first)."""
    return dict(sorted(_METRICS.items()))


def registered_tables() -> dict[str, dict[str, MetricSpec]]:
    """Every declared table with its columns."""
    return {t: dict(cols) for t, cols in sorted(_TABLES.items())}


def table_types(table: str) -> dict[str, str]:
    return {name: spec.type for name, spec in _TABLES.get(table, {}).items()}
