"""Write the generated blocks of docs/: the sweep-file keys and the metric names.

    python scripts/gen_docs.py          # rewrite the blocks in place (`make docs`)
    python scripts/gen_docs.py --check  # exit 1, naming each stale page, when a block is out of date

A page holds a generated block between `<!-- BEGIN GENERATED: <block> -->` and
`<!-- END GENERATED: <block> -->`; everything outside the markers is hand-written and left alone.

- `sweep-keys` (docs/sweep-file.md): every key of a sweep file, walked from the pydantic models
  (`orchestrator.driver.schema.SweepConfig`, which extends `trainables.config.TrialConfig`),
  one table per section, in the order the models declare them.
- `metrics` (docs/profilers-and-metrics.md): every metric name and table column the producing
  modules declare in `profilers.metric_registry`, grouped by prefix.

It also writes `profilers/metric_catalog.json`, the same declarations as data: the sweep's driver
types its Parquet columns from it without importing torch, timm and peft.

The output depends only on the code, never on the machine or the clock, so `--check` is stable.
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    # Run as `python scripts/gen_docs.py` from a checkout that is not installed.
    sys.path.insert(0, str(ROOT))

from pydantic import BaseModel  # noqa: E402
from pydantic.fields import FieldInfo  # noqa: E402
from pydantic_core import PydanticUndefined  # noqa: E402

DOCS = ROOT / "docs"
BEGIN = "<!-- BEGIN GENERATED: {name} -->"
END = "<!-- END GENERATED: {name} -->"
NOTE = "<!-- Written by scripts/gen_docs.py (`make docs`) from {source}; edit the code, not this block. -->"


# ---------------------------------------------------------------------------------------------
# Sweep-file keys


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return get_origin(tp) in (Union, types.UnionType)


def _non_none(args: tuple[Any, ...]) -> list[Any]:
    return [a for a in args if a is not type(None)]


def _type_name(tp: Any, section: Callable[[type[BaseModel]], str]) -> str:
    """A reader's name for an annotation: `int`, `list of str`, `float or null`, `mapping`."""
    if tp is Any:
        return "any"
    if tp is type(None):
        return "null"
    if _is_model(tp):
        return section(tp)
    origin = get_origin(tp)
    args = get_args(tp)
    if _is_union(tp):
        names = [_type_name(a, section) for a in _non_none(args)]
        if type(None) in args:
            names.append("null")
        return " or ".join(dict.fromkeys(names))
    if origin is Literal:
        kinds = sorted({type(a).__name__ for a in args})
        return " or ".join("str" if k == "str" else k for k in kinds)
    if origin in (list, set, frozenset):
        return f"list of {_type_name(args[0], section)}" if args else "list"
    if origin is tuple:
        return "[" + ", ".join(_type_name(a, section) for a in args) + "]"
    if origin is dict:
        if len(args) == 2 and args[1] is not Any:
            return f"mapping of {_type_name(args[0], section)} to {_type_name(args[1], section)}"
        return "mapping"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "str"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _literal_values(tp: Any) -> list[Any]:
    """Every value a Literal (possibly nested in a union or list) accepts, in declared order."""
    if get_origin(tp) is Literal:
        return list(get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [m.value for m in tp]
    found: list[Any] = []
    for arg in get_args(tp):
        found += [v for v in _literal_values(arg) if v not in found]
    return found


def _value(value: Any) -> str:
    """A value as it is written in YAML."""
    if isinstance(value, BaseModel):
        return "{}"  # a section left at its defaults: `model: {}`
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, str):
        return value if value else '""'
    if isinstance(value, tuple):
        value = list(value)
    return json.dumps(value, default=str).replace('"', "")


# annotated_types constraint -> how it reads
_BOUNDS = (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))


def _constraints(field: FieldInfo) -> list[str]:
    out = []
    for meta in field.metadata:
        for attr, sign in _BOUNDS:
            bound = getattr(meta, attr, None)
            if bound is not None:
                out.append(f"{sign} {_value(bound)}")
        for attr, label in (("min_length", "length >="), ("max_length", "length <=")):
            bound = getattr(meta, attr, None)
            if bound is not None:
                out.append(f"{label} {bound}")
        pattern = getattr(meta, "pattern", None)
        if pattern is not None:
            out.append(f"matches `{pattern}`")
    return out


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        try:
            return f"`{_value(field.default_factory())}`"  # type: ignore[call-arg]
        except TypeError:  # a factory that wants the validated data
            return "computed"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{_value(field.default)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _doc_line(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__") or ""
    return " ".join(doc.strip().split("\n\n")[0].split())


def _sub_models(tp: Any) -> list[tuple[type[BaseModel], str]]:
    """The models a field's value holds, each with the path step that reaches it."""
    if _is_model(tp):
        return [(tp, "")]
    origin = get_origin(tp)
    args = get_args(tp)
    if _is_union(tp):
        return [found for a in _non_none(args) for found in _sub_models(a)]
    if origin in (list, set, frozenset, tuple) and args:
        return [(m, "[]" + step) for m, step in _sub_models(args[0])]
    if origin is dict and len(args) == 2:
        return [(m, ".<key>" + step) for m, step in _sub_models(args[1])]
    return []


def _field_row(dotted: str, field: FieldInfo, type_name: str) -> str:
    accepted = [f"`{_value(v)}`" for v in _literal_values(field.annotation)]
    accepted += _constraints(field)
    cells = [
        f"`{dotted}`",
        type_name,
        _default(field),
        ", ".join(accepted),
        field.description or "",
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _section_lines(
    key: str,
    model: type[BaseModel],
    note: str,
    documented: dict[type[BaseModel], str],
) -> list[str]:
    """The table of one section, then (depth first) the tables of the sections it holds."""
    title = f"`{key}`" if key else "Top level"
    out = [f"### {title}", ""]
    intro = " ".join(t for t in (_doc_line(model) if key else "", note) if t)
    if intro:
        out += [intro, ""]
    if not model.model_fields:
        return [*out, "No keys: `{}` switches it on with its defaults.", ""]
    documented[model] = key
    out += ["| key | type | default | accepted | description |", "|---|---|---|---|---|"]
    children: list[tuple[str, type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{key}.{field.alias or name}" if key else (field.alias or name)
        refs: dict[type[BaseModel], str] = {}
        for child, step in _sub_models(field.annotation):
            child_key = dotted + step
            if child in documented and child.model_fields:
                # Already tabled elsewhere (or an ancestor): point there instead of repeating it.
                refs[child] = f"mapping (the keys of `{documented[child] or '(top level)'}`)"
                continue
            refs[child] = f"mapping (see `{child_key}`)"
            note = ""
            if step.startswith("[]"):
                note = f"Each item of the list `{dotted}`."
            elif step.startswith(".<key>"):
                note = f"The value of each entry of `{dotted}`; `<key>` is the entry's key."
            children.append((child_key, child, note))
        type_name = _type_name(field.annotation, lambda m, refs=refs: refs.get(m, m.__name__))
        out.append(_field_row(dotted, field, type_name))
    out.append("")
    for child_key, child, note in children:
        out += _section_lines(child_key, child, note, documented)
    return out


def sweep_keys_markdown() -> str:
    """Every sweep-file key, one table per section, walked from `SweepConfig`."""
    from orchestrator.driver.schema import SweepConfig

    lines = _section_lines("", SweepConfig, "", {})
    return "\n".join(lines).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Metric names

# Groups in the order a reader meets them; any other prefix follows, alphabetically.
GROUP_ORDER = (
    "train",
    "val",
    "best",
    "optim",
    "time",
    "data",
    "mem",
    "flops",
    "params",
    "model",
    "latency",
    "env",
    "init",
    "lora",
    "prune",
    "dense",
    "pruned",
    "merged",
    "recovered",
    "start",
    "dist",
    "profile",
)


def _group_key(group: str) -> tuple[int, str]:
    return (GROUP_ORDER.index(group) if group in GROUP_ORDER else len(GROUP_ORDER), group)


def _metric_rows(specs: dict[str, Any], first: str) -> list[str]:
    rows = [
        f"| {first} | type | unit | meaning | produced by |",
        "|---|---|---|---|---|",
    ]
    for name in sorted(specs):
        spec = specs[name]
        rows.append(
            f"| `{name}` | {spec.type} | {_cell(spec.unit) or '-'} | {_cell(spec.description)} "
            f"| `{spec.module}` |"
        )
    return rows


def _declare_everything() -> None:
    from trainables.registry import load_metric_declarations

    load_metric_declarations()
    # The facts the orchestrator adds to every trial: where it ran, how many workers; and what
    # the driver derives per trial: the Pareto front of a search, the price.
    import orchestrator.driver.objectives
    import orchestrator.workers.trial_runner  # noqa: F401


def metrics_markdown() -> str:
    """Every declared metric, grouped by prefix, then every declared table's columns."""
    from profilers.metric_registry import registered, registered_tables

    _declare_everything()
    metrics = registered(declared_only=True)
    groups: dict[str, dict[str, Any]] = {}
    for name, spec in metrics.items():
        group = name.split("/", 1)[0] if "/" in name else "(no prefix)"
        groups.setdefault(group, {})[name] = spec
    out: list[str] = []
    if not metrics:
        out += ["No metric is declared yet.", ""]
    for group in sorted(groups, key=_group_key):
        heading = f"`{group}/`" if group != "(no prefix)" else "Without a prefix"
        out += [f"### {heading}", "", *_metric_rows(groups[group], "name"), ""]
    for table, columns in registered_tables(declared_only=True).items():
        out += [f"### Columns of table `{table}`", "", *_metric_rows(columns, "column"), ""]
    return "\n".join(out).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------
# Pages

# block name -> (page, what it is generated from, renderer)
BLOCKS: dict[str, tuple[str, str, Callable[[], str]]] = {
    "sweep-keys": (
        "sweep-file.md",
        "orchestrator.driver.schema.SweepConfig",
        sweep_keys_markdown,
    ),
    "metrics": (
        "profilers-and-metrics.md",
        "profilers.metric_registry",
        metrics_markdown,
    ),
}


def replace_block(text: str, name: str, body: str, source: str) -> str:
    """`text` with the block `name` holding `body`; an error when the markers are missing."""
    begin, end = BEGIN.format(name=name), END.format(name=name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if len(pattern.findall(text)) != 1:
        raise ValueError(f"need exactly one {begin} ... {end} pair")
    block = f"{begin}\n{NOTE.format(source=source)}\n\n{body.rstrip()}\n\n{end}"
    return pattern.sub(lambda _: block, text)


def render(docs: Path = DOCS) -> dict[Path, tuple[str, str]]:
    """Each page with a generated block, and the metric catalog: (text on disk, text as it
    should be)."""
    from profilers.metric_registry import CATALOG, catalog_json

    _declare_everything()
    on_disk = CATALOG.read_text(encoding="utf-8") if CATALOG.exists() else ""
    pages: dict[Path, tuple[str, str]] = {CATALOG: (on_disk, catalog_json())}
    for name, (page, source, renderer) in BLOCKS.items():
        path = docs / page
        current = pages[path][1] if path in pages else path.read_text(encoding="utf-8")
        on_disk = pages[path][0] if path in pages else current
        try:
            wanted = replace_block(current, name, renderer(), source)
        except ValueError as err:
            raise SystemExit(f"{_shown(path)}: {err}") from err
        pages[path] = (on_disk, wanted)
    return pages


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def stale_pages(docs: Path = DOCS) -> list[Path]:
    """The pages whose generated blocks differ from what the code says now."""
    return [path for path, (have, want) in render(docs).items() if have != want]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 when a page is out of date"
    )
    parser.add_argument("--docs", type=Path, default=DOCS, help="the docs folder (docs/)")
    args = parser.parse_args(argv)
    pages = render(args.docs)
    stale = [path for path, (have, want) in pages.items() if have != want]
    if args.check:
        for path in stale:
            print(
                f"{_shown(path)} is out of date: run `make docs` (python scripts/gen_docs.py)",
                file=sys.stderr,
            )
        return 1 if stale else 0
    for path in stale:
        path.write_text(pages[path][1], encoding="utf-8")
        print(f"wrote {_shown(path)}")
    if not stale:
        print("docs/ is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
