"""`python -m orchestrator report DIR [--out report.html]`: the Parquet tables as one HTML report.

`build_report(results_dir, out_path)` reads every table under `results_dir` (any number of sweeps)
and writes one self-contained HTML file that opens with no network: interactive plotly figures
(plotly.js inlined once) for accuracy vs cost, parallel coordinates, training curves, latency and
memory; the other figures as PNG data URIs, also written to `<out stem>_plots/` beside it.
`static=True` (`report --static`) draws every figure as a matplotlib PNG, as for a paper.
Trials that differ only in `seed` (or the `group_by` keys) are pooled into groups: `groups()`.

Sections, each present only when its data is: overview, recommendations, a summary table per
sweep, speed-ups, cost (USD per run and per accuracy point, where the sweep has prices), accuracy
vs GMACs / latency / peak memory with the Pareto front, training curves, latency vs input size,
memory (GPU allocated vs reserved, or CPU RSS), LoRA rank, pruning ratio, pruning sensitivity
heatmap, weight distributions, environment. Column names it reads: `columns.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

# The function, not the module of the same name (pandas and pyarrow: the driver has them anyway).
from orchestrator.report.groups import groups

if TYPE_CHECKING:
    from orchestrator.report.sections import Section

__all__ = ["build_report", "default_out_path", "groups", "run"]

log = logging.getLogger(__name__)

DEFAULT_NAME = "report.html"


def default_out_path(results_dir: str | Path) -> Path:
    return Path(results_dir) / DEFAULT_NAME


def build_report(
    results_dir: str | Path,
    out_path: str | Path | None = None,
    *,
    static: bool = False,
    group_by: str | None = None,
) -> Path:
    """Write the report of the tables under `results_dir` to `out_path`; return its path.

    `static`: every figure a PNG (no plotly.js); `group_by`: the keys pooled into groups of
    repeats (default `seed`; comma-separated for several).

    Raises FileNotFoundError when `results_dir` does not exist or holds no table.
    """
    # Imported here: the sweep's driver imports this package for `caveats`, and matplotlib,
    # plotly and the figures cost its start a second.
    from orchestrator.report.page import render_page
    from orchestrator.report.sections import build_sections
    from orchestrator.report.tables import load_tables

    results_dir = Path(results_dir)
    out = Path(out_path) if out_path else default_out_path(results_dir)
    tables = load_tables(results_dir)
    if tables.empty:
        raise FileNotFoundError(
            f"no Parquet tables under {str(results_dir)!r}: expected {results_dir}/epochs/ "
            "(the --output of a sweep) or <dir>/<sweep output>/epochs/"
        )
    sections = build_sections(tables, static=static, group_by=group_by)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_dir = out.parent / f"{out.stem}_plots"
    _write_plots(sections, plot_dir)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    html = render_page(
        title="lvmbench report",
        subtitle=f"{results_dir.resolve()} - written {stamp}",
        sections=sections,
        root=str(results_dir.resolve()),
        plot_dir=plot_dir.name,
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(out)  # a reader never sees half a report
    return out


def _write_plots(sections: list[Section], plot_dir: Path) -> None:
    if not any(section.plots for section in sections):
        return
    plot_dir.mkdir(parents=True, exist_ok=True)
    for section in sections:
        for plot in section.plots:
            (plot_dir / f"{plot.name}.png").write_bytes(plot.png)


def run(args: argparse.Namespace) -> int:
    """`python -m orchestrator report` (its flags: `orchestrator.cli`); prints the report's path;
    0 on success, 2 on bad input."""
    try:
        path = build_report(
            args.results_dir,
            args.out,
            static=getattr(args, "static", False),
            group_by=getattr(args, "group_by", None),
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0
