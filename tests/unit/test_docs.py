"""The docs cannot drift from the code: generated blocks are current, the README is the front door.

`scripts/gen_docs.py` writes the sweep-file keys and the metric names into docs/ (`make docs`);
these tests fail when a page is out of date, when a key of the schema is missing from the pages,
when the README outgrows ~200 lines or stops linking a docs page, and when a link points nowhere.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, get_args

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = ROOT / "README.md"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_docs() -> ModuleType:
    return _load_generator()


def test_generated_blocks_are_current(gen_docs: ModuleType) -> None:
    stale = gen_docs.stale_pages()
    assert not stale, (
        f"out of date: {', '.join(str(p.relative_to(ROOT)) for p in stale)}; run `make docs`"
    )


def test_check_names_a_stale_page(
    gen_docs: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    page = docs / "sweep-file.md"
    text = page.read_text(encoding="utf-8")
    # A key the schema no longer has, as a page would show after a field is renamed in the code.
    tampered = text.replace("| `optim.lr` |", "| `optim.learning_rate` |", 1)
    assert tampered != text
    page.write_text(tampered, encoding="utf-8")

    assert gen_docs.main(["--check", "--docs", str(docs)]) == 1
    assert "sweep-file.md is out of date" in capsys.readouterr().err
    assert gen_docs.main(["--docs", str(docs)]) == 0  # rewrites it
    assert page.read_text(encoding="utf-8") == text
    assert gen_docs.main(["--check", "--docs", str(docs)]) == 0


def _submodels(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _submodels(arg)]


def _leaf_names(model: type[BaseModel], seen: frozenset[type] = frozenset()) -> set[str]:
    """Every field name reachable from `model`, walked here independently of the generator."""
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        for sub in _submodels(field.annotation):
            if sub not in seen:
                names |= _leaf_names(sub, seen | {model})
    return names


def test_every_schema_key_is_documented() -> None:
    from orchestrator.driver.schema import SweepConfig

    page = (DOCS / "sweep-file.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE))
    last_parts = {key.rsplit(".", 1)[-1] for key in documented}
    missing = _leaf_names(SweepConfig) - last_parts
    assert not missing, f"sweep-file.md lacks the keys {sorted(missing)}"
    for key in ("optim.lr", "profilers.latency.batch_sizes", "prune.ratio", "lora.rank"):
        assert key in documented


def test_every_declared_metric_is_documented(gen_docs: ModuleType) -> None:
    from profilers.metric_registry import registered
    from trainables.registry import load_metric_declarations

    load_metric_declarations()
    page = (DOCS / "profilers-and-metrics.md").read_text(encoding="utf-8")
    missing = [name for name in registered() if f"| `{name}` |" not in page]
    assert not missing, f"profilers-and-metrics.md lacks {missing}; run `make docs`"


def test_readme_is_the_front_door() -> None:
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 260, f"README.md has {len(lines)} lines; the reference goes in docs/"
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert len(pages) >= 6
    unlinked = [name for name in pages if f"](docs/{name}" not in text]
    assert not unlinked, f"README.md does not link {unlinked}"
    assert "docs/img/quickstart_report.png" in text
    assert "## How the code is laid out" in text


def _slug(heading: str) -> str:
    # GitHub's anchors: lower case, punctuation dropped (but - and _), spaces -> hyphens.
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        slug = _slug(line.lstrip("#"))
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_point_somewhere(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists() or (anchor and dest.suffix == ".md" and anchor not in _anchors(dest)):
            broken.append(target)
    assert not broken, f"{page.name}: links that point nowhere: {broken}"


def _readme_layout() -> list[str]:
    """The paths in README's layout block: `pkg/sub/` lines open a folder whose indented lines
    (`module.py`) are its modules."""
    section = README.read_text(encoding="utf-8").split("## How the code is laid out", 1)[1]
    block = section.split("\n\n    ", 1)[1].split("\n\n", 1)[0]
    listed: list[str] = []
    folder = ""
    for line in ("    " + block).splitlines():
        indent = len(line) - len(line.lstrip())
        path = line.split()[0]
        if indent == 4:
            listed.append(path)
            folder = path if path.endswith("/") else ""
        else:
            assert folder, f"an indented line with no folder above it: {line!r}"
            listed.append(folder + path)
    return listed


def test_readme_layout_names_every_module_once() -> None:
    """README's code layout names every package and every module once: none missing, none gone,
    so a reader finds each concern in one hop from the folder names."""
    listed = _readme_layout()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    gone = [m for m in listed if not (ROOT / m).exists()]
    assert not gone, f"README.md lists modules that do not exist: {gone}"
    actual = {
        str(p.relative_to(ROOT))
        for layer in ("orchestrator", "trainables", "profilers")
        for p in (ROOT / layer).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "report" not in p.parts
    } | {
        f"{p.parent.relative_to(ROOT)}/"
        for layer in ("orchestrator", "trainables", "profilers")
        for p in (ROOT / layer).glob("*/__init__.py")
    }
    unlisted = sorted(actual - set(listed))
    assert not unlisted, f"README.md's layout lacks {unlisted}"


def test_each_concern_has_its_own_subpackage() -> None:
    """The concerns a reader looks for (issue 19) each live in a folder or module of their own."""
    for path in (
        "trainables/loop/fit.py",
        "trainables/models/create.py",
        "trainables/data/loaders.py",
        "trainables/adapters/lora.py",
        "trainables/pruning/apply.py",
        "orchestrator/workers/trial_runner.py",
        "orchestrator/sinks/parquet_rows.py",
        "orchestrator/report/__init__.py",
        "orchestrator/tables.py",
    ):
        assert (ROOT / path).is_file(), path
    top = [p.name for p in (ROOT / "trainables").glob("*.py")]
    assert len(top) <= 12, f"trainables/ has {len(top)} modules at its top: {sorted(top)}"


def test_the_driver_types_columns_from_the_catalog_without_torch() -> None:
    import subprocess

    code = (
        "import sys\n"
        "import orchestrator.tables\n"
        "from profilers.metric_registry import metric_spec\n"
        "spec = metric_spec('time/epoch_s')\n"
        "print('SPEC', spec.type, spec.module, spec.from_catalog)\n"
        "print('TABLE', metric_spec('merged/flops/fwd_gmacs').type)\n"
        "print('HEAVY', sorted(m for m in ('torch', 'timm', 'peft') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "SPEC float64 profilers.step_timer True" in out.stdout
    assert "TABLE float64" in out.stdout
    assert "HEAVY []" in out.stdout


def test_a_declaration_replaces_its_catalog_entry(tmp_path: Path) -> None:
    import json

    from profilers import metric_registry as reg

    catalog = {
        "metrics": {"zz_test/x": ["int64", "count", "old meaning", "somewhere.old"]},
        "tables": {"zz_test_table": {"c": ["string", "", "old", "somewhere.old"]}},
    }
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(catalog), encoding="utf-8")
    try:
        reg.load_catalog(path)
        assert reg.metric_type("zz_test/x") == "int64"
        assert "zz_test/x" not in reg.registered(declared_only=True)
        # The module's own declaration wins, even where the (stale) catalog said otherwise.
        reg.declare("tests.here", {"zz_test/x": (reg.F, "s", "new meaning")})
        assert reg.metric_spec("zz_test/x") == reg.MetricSpec(
            "zz_test/x", "float64", "s", "new meaning", "tests.here"
        )
        # Two real declarations that disagree are still an error.
        with pytest.raises(ValueError, match="zz_test/x"):
            reg.declare("tests.other", {"zz_test/x": (reg.INT, "count", "other")})
    finally:
        reg._METRICS.pop("zz_test/x", None)
        reg._TABLES.pop("zz_test_table", None)
        reg._SPEC_CACHE.clear()


# Repository folders a doc or a sweep header may cite a path in.
CITED = re.compile(
    r"(?<![\w/.-])((?:docs|sweeps|orchestrator|trainables|profilers|scripts|tests|benchmarks|docker)"
    r"/[\w./-]*[\w/])"
)
RESULTS = re.compile(r"(?<![\w/.-])results/([\w.-]+)")


def _sweep_headers() -> dict[str, str]:
    """Each shipped sweep's comments: what its header (and inline notes) tell a reader."""
    out = {}
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        notes = [
            ln.split("#", 1)[1] for ln in path.read_text(encoding="utf-8").splitlines() if "#" in ln
        ]
        out[f"sweeps/{path.name}"] = "\n".join(notes)
    return out


def _cited_texts() -> dict[str, str]:
    texts = {f"docs/{p.name}": p.read_text(encoding="utf-8") for p in sorted(DOCS.glob("*.md"))}
    texts["README.md"] = README.read_text(encoding="utf-8")
    texts["docker/compose.yaml"] = (ROOT / "docker" / "compose.yaml").read_text(encoding="utf-8")
    texts["docker/Dockerfile"] = (ROOT / "docker" / "Dockerfile").read_text(encoding="utf-8")
    return {**texts, **_sweep_headers()}


def _exists(path: str) -> bool:
    # `tests/report_tables.write_seeds`: a function of tests/report_tables.py.
    module = path.rsplit(".", 1)[0] + ".py"
    return (ROOT / path).exists() or ("." in path and (ROOT / module).is_file())


def test_every_path_a_doc_or_sweep_header_cites_exists() -> None:
    missing = [
        f"{where}: {path}"
        for where, text in _cited_texts().items()
        for path in CITED.findall(text)
        if not _exists(path)
    ]
    assert not missing, missing


def test_every_results_path_a_doc_or_sweep_header_cites_is_a_table() -> None:
    from profilers.metric_registry import load_catalog, registered_tables

    load_catalog()
    # The tables, Tune's state, and the report with its PNG folder.
    known = {"epochs", "trials", "_tune", "report.html", "report_plots", *registered_tables()}
    wrong = [
        f"{where}: results/{name}"
        for where, text in _cited_texts().items()
        for name in RESULTS.findall(text)
        if name not in known
    ]
    assert not wrong, f"not a table under --output: {wrong}"


def _section(page: str, table: str) -> str:
    """The text under the `## ` heading(s) of docs/tables.md that name `table`."""
    parts = re.split(r"^## ", page, flags=re.MULTILINE)
    return "\n".join(p for p in parts if f"`{table}`" in p.splitlines()[0])


def test_every_table_column_is_documented_under_its_table() -> None:
    from orchestrator.sinks.parquet_rows import summarize_trial
    from profilers.metric_registry import load_catalog, registered_tables

    load_catalog()
    page = (DOCS / "tables.md").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    tables = {t: set(cols) for t, cols in registered_tables().items()}
    tables["trials"] = set(summarize_trial({}, [], "ERROR", "boom"))
    for prune_table in ("sensitivity", "weights", "pruned_layers"):
        assert tables.get(prune_table), f"table {prune_table!r} declares no column types"
    missing = []
    for table, columns in sorted(tables.items()):
        section = _section(page, table)
        if not section:
            missing.append(f"docs/tables.md has no section for `{table}`")
        missing += [f"{table}.{c}" for c in sorted(columns) if f"`{c}`" not in section]
        if f"`results/{table}/`" not in readme:
            missing.append(f"README's file table lacks results/{table}/")
    assert not missing, missing
