"""The report's sections, each built only when its data exists.

A `Section` holds text, `Plot`s and `HtmlTable`s; the page template lays them out. Numbers in
tables keep their exact stored value beside the shown text (`Cell.value`, written as the cell's
`data-value`), so a reader or a test can check every figure against Parquet.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report import interactive, plots
from orchestrator.report.caveats import caveat_flags
from orchestrator.report.groups import GROUP, N, groups
from orchestrator.report.recommendations import grouped_recommendations
from orchestrator.report.speedups import speedup_rows
from orchestrator.report.tables import (
    Tables,
    for_sweep,
    has,
    reported_latency,
    trial_view,
    varying_columns,
)

log = logging.getLogger(__name__)


@dataclass
class Cell:
    text: str
    value: float | str | None = None  # the exact value behind `text`, when it is a number


@dataclass
class HtmlTable:
    caption: str
    header: list[str]
    rows: list[list[Cell]]
    highlight: set[int] = field(default_factory=set)  # row indices to mark (e.g. the best trial)
    id: str = ""
    collapsed: bool = False  # drawn inside a closed <details>: big tables stay out of the way


@dataclass
class Part:
    """A block of a section; one per sweep when the report covers several."""

    heading: str = ""
    bullets: list[str] = field(default_factory=list)
    plots: list[plots.Plot] = field(default_factory=list)
    tables: list[HtmlTable] = field(default_factory=list)
    html: list[str] = field(default_factory=list)  # interactive figures (`interactive.py`)


@dataclass
class Section:
    id: str
    title: str
    intro: str = ""
    parts: list[Part] = field(default_factory=list)

    @property
    def plots(self) -> list[plots.Plot]:
        return [p for part in self.parts for p in part.plots]


# Metric columns of the summary table, in order, each shown when any trial has it.
SUMMARY_METRICS = (
    C.BEST_PREFIX + C.VAL_ACC,
    C.BEST_PREFIX + C.VAL_F1,
    C.VAL_ACC,
    C.VAL_LOSS,
    C.DENSE_ACC[0],
    C.PRUNED_ACC[0],
    C.RECOVERED_ACC[0],
    C.EPOCH_S,
    C.SAMPLES_PER_S,
    C.STEP_MS_P50,
    C.GMACS,
    C.PARAMS_TOTAL,
    C.PARAMS_TRAINABLE,
    C.TRAINABLE_PCT,
    C.SPARSITY,
    C.CPU_RSS_MB,
    C.GPU_ALLOC_MB,
    C.GPU_RESERVED_MB,
    C.CPU_PROCESS_RSS_MB,
    *C.TRIAL_LATENCY_MS,
)
FRACTION_METRICS = {C.VAL_ACC, C.TRAIN_ACC, C.VAL_F1, C.SPARSITY}


def is_fraction(column: str) -> bool:
    """Accuracy-like columns (also `best/`, `dense/`, `pruned/`, `recovered/` ones)."""
    return column.split("/", 1)[-1] in FRACTION_METRICS or column in FRACTION_METRICS


def format_value(value: object, column: str = "") -> Cell:
    """Text for one table cell; accuracies with 3 decimals, other numbers by magnitude."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return Cell("-", None)
    if isinstance(value, bool | np.bool_):
        return Cell(str(bool(value)), str(bool(value)))
    if isinstance(value, int | np.integer):
        return Cell(f"{int(value):,}", int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if is_fraction(column):
            text = f"{v:.3f}"
        elif v == int(v) and abs(v) < 1e15:
            text = f"{int(v):,}"
        elif abs(v) >= 1000:
            text = f"{v:,.0f}"
        elif abs(v) >= 10:
            text = f"{v:.1f}"
        else:
            text = f"{v:.3g}"
        return Cell(text, v)
    return Cell(str(value), str(value))


def _table(
    df: pd.DataFrame,
    cols: list[str],
    caption: str,
    *,
    header: list[str] | None = None,
    table_id: str = "",
) -> HtmlTable:
    rows = [[format_value(row[c], c) for c in cols] for _, row in df.iterrows()]
    return HtmlTable(caption, header or cols, rows, id=table_id)


def _present(df: pd.DataFrame, cols: tuple[str, ...] | list[str]) -> list[str]:
    return [c for c in cols if has(df, c)]


def _trial_columns(g: pd.DataFrame, *extra: str) -> list[str]:
    """What names a trial in a per-trial table: label, id, stage, `extra`, the searched config."""
    ident = [c for c in (C.LABEL, C.TRIAL_ID, C.STAGE, *extra) if has(g, c)]
    return ident + [c for c in varying_columns(g) if c != C.STAGE]


def overview(tables: Tables, view: pd.DataFrame) -> Section:
    """Where the numbers come from: sweeps, trials, epochs and the files read."""
    counts = {name: len(tables.get(name)) for name in C.TABLES}
    read = ", ".join(f"{name} ({n} rows)" for name, n in counts.items() if n)
    bullets = [f"Results directory: {tables.root}", f"Tables read: {read or 'none'}"]
    epochs = tables.get(C.EPOCHS)
    if has(epochs, C.VAL_ACC):
        best = float(epochs[C.VAL_ACC].max())
        n = epochs[C.TRIAL_ID].nunique() if C.TRIAL_ID in epochs else "?"
        bullets.append(
            f"Best val/acc over all epochs: {best:.3f} ({100 * best:.1f}%), over {n} trials."
        )
    rows = []
    for sweep, g in _sweeps(view):
        status = (
            ", ".join(f"{k} {v}" for k, v in g[C.STATUS].astype(str).value_counts().items())
            if C.STATUS in g
            else "-"
        )
        rows.append(
            [
                Cell(str(sweep), str(sweep)),
                format_value(len(g)),
                Cell(status, status),
                Cell(_distinct(g, C.TRAINABLE)),
                Cell(_distinct(g, C.MODEL_NAME)),
                Cell(", ".join(c for c in varying_columns(g) if c != C.STAGE) or "-"),
                Cell(
                    "yes" if C.SMOKE in g and g[C.SMOKE].fillna(False).astype(bool).any() else "no"
                ),
            ]
        )
    header = ["sweep", "trials", "status", "trainable", "models", "searched", "smoke"]
    table = HtmlTable("Sweeps", header, rows, id="sweeps")
    return Section(
        "overview", "Overview", parts=[Part(bullets=bullets, tables=[table] if rows else [])]
    )


def _distinct(df: pd.DataFrame, col: str) -> str:
    if col not in df:
        return "-"
    return ", ".join(sorted(df[col].dropna().astype(str).unique())) or "-"


def _sweeps(view: pd.DataFrame) -> list[tuple[object, pd.DataFrame]]:
    """(sweep name, its trials) in order of appearance; one unnamed group without a sweep column."""
    if view.empty:
        return []
    if C.SWEEP not in view:
        return [(None, view)]
    return list(view.groupby(C.SWEEP, sort=False))


def summary_table(sweep: object, g: pd.DataFrame) -> HtmlTable:
    """One row per trial of one sweep: status, searched config, best and final metrics."""
    acc = C.BEST_PREFIX + C.VAL_ACC
    g = g.sort_values(acc, ascending=False, na_position="last") if acc in g else g
    ident = _trial_columns(g, C.STATUS, C.N_EPOCHS)
    metrics = _present(g, SUMMARY_METRICS)
    if not any(c in metrics for c in C.TRIAL_LATENCY_MS) and has(g, C.LATENCY_MS):
        metrics.append(C.LATENCY_MS)  # from the `latency` table, where trials carry none
    cols = ident + metrics
    flags = caveat_flags(g)
    if flags.astype(bool).any():
        g = g.assign(caveats=flags)
        cols.append("caveats")
    header = ["trial" if c == C.LABEL else c for c in cols]
    t = _table(
        g,
        cols,
        f"Sweep {sweep}: {len(g)} trials, best first",
        header=header,
        table_id=f"summary-{sweep}",
    )
    if acc in g and g[acc].notna().any():
        t.highlight = {0}
    return t


# Trial tables longer than this start collapsed.
COLLAPSE_ROWS = 20


def grouped_table(sweep: object, g: pd.DataFrame, group_by: str | None) -> HtmlTable | None:
    """One row per group of repeats: n, and per metric mean +- std and the 95% interval."""
    metrics = _present(g, SUMMARY_METRICS)
    if has(g, C.LATENCY_MS) and not any(c in metrics for c in C.TRIAL_LATENCY_MS):
        metrics.append(C.LATENCY_MS)
    if has(g, C.PEAK_MEM_MB):
        metrics.append(C.PEAK_MEM_MB)
    stats = groups(g, group_by, metrics=metrics)
    if stats.empty or stats[N].max() < 2:
        return None
    acc = C.BEST_PREFIX + C.VAL_ACC
    if f"{acc} mean" in stats:
        stats = stats.sort_values(f"{acc} mean", ascending=False, na_position="last")
    header = ["group", "n"]
    for m in metrics:
        header += [f"{m} mean ± std", f"{m} 95% CI"]
    rows = []
    for _, r in stats.iterrows():
        row = [Cell(str(r[GROUP]), str(r[GROUP])), format_value(int(r[N]))]
        for m in metrics:
            mean, std = r[f"{m} mean"], r[f"{m} std"]
            lo, hi = r[f"{m} ci95_lo"], r[f"{m} ci95_hi"]
            mtext = format_value(mean, m)
            stext = format_value(std, m).text if pd.notna(std) else "-"
            row.append(Cell(f"{mtext.text} ± {stext}", mtext.value))
            if pd.notna(lo):
                row.append(
                    Cell(f"[{format_value(lo, m).text}, {format_value(hi, m).text}]", float(lo))
                )
            else:
                row.append(Cell("-", None))
        rows.append(row)
    caption = (
        f"Sweep {sweep}: {len(stats)} groups of repeats (trials that differ only in "
        f"{group_by or 'seed'}), best mean first"
    )
    t = HtmlTable(caption, header, rows, id=f"groups-{sweep}")
    if f"{acc} mean" in stats:
        t.highlight = {0}
    return t


def summary(view: pd.DataFrame, group_by: str | None = None) -> Section | None:
    parts = []
    for sweep, g in _sweeps(view):
        grouped = grouped_table(sweep, g, group_by)
        trials = summary_table(sweep, g)
        trials.collapsed = grouped is not None or len(g) > COLLAPSE_ROWS
        parts.append(Part(tables=[t for t in (grouped, trials) if t is not None]))
    if not parts:
        return None
    return Section(
        "summary",
        "Summary per sweep",
        intro=(
            "Where trials repeat (they differ only in seed, or in the --group-by keys), one row "
            "per group first: n, mean ± standard deviation and the 95% confidence interval of the "
            "mean (Student's t). Then one row per trial (click to open). best/... is the best "
            "value over the trial's epochs; other metrics are the final epoch's, memory is the "
            "peak over epochs. Column names are the Parquet column names. Click a header to sort."
        ),
        parts=parts,
    )


def speedups_section(view: pd.DataFrame) -> Section | None:
    """Each tuned trial against its baseline (same sweep, model and dataset): `speedups.py`."""
    parts = []
    for sweep, g in _sweeps(view):
        rows = speedup_rows(g)
        if not rows:
            continue
        df = pd.DataFrame(rows)
        cols = list(df.columns)
        caption = f"Sweep {sweep}: {len(df)} tuned trials against their baselines"
        parts.append(Part(tables=[_table(df, cols, caption, table_id=f"speedups-{sweep}")]))
    if not parts:
        return None
    return Section(
        "speedups",
        "Speed-ups",
        intro=(
            "Each tuned trial beside the trial of the same model and dataset in a stage named "
            "baseline. Ratios are tuned / baseline (below 1: faster, or less memory); differences "
            "are in percentage points of the best val/acc and F1."
        ),
        parts=parts,
    )


def cost_section(view: pd.DataFrame) -> Section | None:
    """Dollars per run and per accuracy point, where the sweep priced its trials (`cost:`)."""
    if not has(view, C.COST_USD):
        return None
    acc = C.BEST_PREFIX + C.VAL_ACC
    parts = []
    for sweep, g in _sweeps(view):
        usd = pd.to_numeric(g[C.COST_USD], errors="coerce")
        g = g[usd.notna()]
        if g.empty:
            continue
        usd = usd[usd.notna()].astype(float)
        points = 100 * pd.to_numeric(g.get(acc, pd.Series(index=g.index)), errors="coerce")
        g = g.assign(**{C.USD_PER_POINT: usd / points.where(points > 0)})
        g = g.sort_values(C.USD_PER_POINT, na_position="last")
        cols = _trial_columns(g) + _present(g, [C.COST_USD, C.TOTAL_S, acc, C.USD_PER_POINT])
        header = ["trial" if c == C.LABEL else c for c in cols]
        name = C.LABEL if C.LABEL in g else C.TRIAL_ID
        cheapest = g.loc[usd.idxmin()]
        lines = [
            f"{len(g)} priced trials, {usd.sum():.4g} USD in all; the cheapest run: "
            f"{cheapest.get(name, '?')} at {usd.min():.4g} USD"
        ]
        if g[C.USD_PER_POINT].notna().any():
            best = g.iloc[0]
            lines.append(
                f"cheapest per accuracy point: {best.get(name, '?')} at "
                f"{best[C.USD_PER_POINT]:.4g} USD per point ({100 * float(best[acc]):.1f} points "
                f"of best val/acc for {float(best[C.COST_USD]):.4g} USD)"
            )
        caption = f"Sweep {sweep}: {len(g)} trials, cheapest per accuracy point first"
        table = _table(g, cols, caption, header=header, table_id=f"cost-{sweep}")
        parts.append(Part(bullets=lines, tables=[table]))
    if not parts:
        return None
    return Section(
        "cost",
        "Cost",
        intro=(
            "What each trial cost at the sweep's prices (cost: in the sweep file): cost/usd from "
            "its wall time (time/total_s) and the resources it held. USD per accuracy point is "
            "cost/usd / (100 x best/val/acc): the price of one percentage point of the accuracy "
            "it reached. Trials without a price are left out; no price, no section."
        ),
        parts=parts,
    )


def recommendations_section(view: pd.DataFrame, group_by: str | None = None) -> Section | None:
    sweeps = _sweeps(view)
    parts = []
    for sweep, g in sweeps:
        for group, lines in grouped_recommendations(g, group_by):
            heading = ", ".join(
                x for x in (f"Sweep {sweep}" if len(sweeps) > 1 else "", group) if x
            )
            parts.append(Part(heading=heading, bullets=lines))
    if not parts:
        return None
    return Section(
        "recommendations",
        "Recommendations",
        intro="Derived from the tables below, per sweep; one point = one percentage point of "
        "val/acc.",
        parts=parts,
    )


def latency_table(latency: pd.DataFrame, view: pd.DataFrame) -> list[HtmlTable]:
    lat = reported_latency(latency)
    if not has(lat, C.LAT_P50):
        return []
    if all(k in lat for k in C.KEY) and not view.empty:
        lat = lat.merge(view[[*C.KEY, C.LABEL]], on=list(C.KEY), how="left")
    cols = _present(
        lat,
        [
            C.LABEL,
            C.LAT_INPUT_SIZE,
            C.LAT_BATCH_SIZE,
            C.LAT_PRECISION,
            C.LAT_P50,
            C.LAT_P90,
            C.LAT_P99,
            *C.LAT_STD,
            C.LAT_CV,
            C.LAT_NOISY,
            C.LAT_THROUGHPUT,
            C.LAT_EXCLUSIVE,
        ],
    )
    sort = [c for c in (C.LABEL, C.LAT_INPUT_SIZE, C.LAT_BATCH_SIZE) if c in cols]
    lat = lat.sort_values(sort) if sort else lat
    header = ["trial" if c == C.LABEL else c for c in cols]
    t = _table(lat, cols, "Latency measurements", header=header, table_id="latency")
    t.collapsed = len(lat) > COLLAPSE_ROWS
    return [t]


def environment(tables: Tables) -> Section | None:
    trials = tables.get(C.TRIALS)
    env_cols = [c for c in trials.columns if c.startswith(C.ENV_PREFIX)]
    rows = []
    for c in env_cols:
        values = sorted({format_value(v, c).text for v in trials[c].dropna()})
        if values:
            rows.append([Cell(c, c), Cell(", ".join(values))])
    if not rows:
        return None
    table = HtmlTable("Environment fingerprint", ["key", "value(s)"], rows, id="environment")
    return Section(
        "environment",
        "Environment",
        intro="Hardware and package versions the trials recorded (all distinct values).",
        parts=[Part(tables=[table])],
    )


# Figure sections: (id, title, draw(sweep's tables, sweep's trial view, palette) -> Plot | None).
PlotFn = Callable[[Tables, pd.DataFrame, plots.Palette], plots.Plot | None]
FIGURES: tuple[tuple[str, str, PlotFn], ...] = (
    ("complexity", "Performance vs complexity", lambda t, v, pal: plots.perf_vs_complexity(v, pal)),
    ("curves", "Training curves", lambda t, v, pal: plots.curves(t.get(C.EPOCHS), v, pal)),
    (
        "latency",
        "Latency vs input size",
        lambda t, v, pal: plots.latency_vs_input(t.get(C.LATENCY), v, pal, t.get(C.FLOPS)),
    ),
    ("memory", "Memory", lambda t, v, pal: plots.memory(v, pal)),
    (
        "family_curves",
        "Model families: accuracy, F1, test loss",
        lambda t, v, pal: plots.family_curves(t.get(C.EPOCHS), v, pal),
    ),
    ("memory_by_size", "Memory by input size", lambda t, v, pal: plots.memory_by_size(v, pal)),
    ("lora", "LoRA rank", lambda t, v, pal: plots.lora(v, pal)),
    ("pruning", "Pruning", lambda t, v, pal: plots.pruning(v, pal)),
    (
        "sensitivity",
        "Pruning sensitivity",
        lambda t, v, pal: plots.sensitivity(t.get(C.SENSITIVITY), v),
    ),
    ("weights", "Weight distributions", lambda t, v, pal: plots.weights(t.get(C.WEIGHTS), v)),
)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "sweep"


# Interactive figures (plotly) that replace the static ones of the same id unless --static:
# (id, caption, draw(sweep's tables, sweep's trial view, div id, group_by) -> HTML | None).
IFigFn = Callable[[Tables, pd.DataFrame, str, "str | None"], "str | None"]
INTERACTIVE: dict[str, tuple[str, IFigFn]] = {
    "complexity": (
        "Choose the axes and a constraint; hover a point for the trial's parameters and metrics; "
        "click a legend entry to hide a group, double-click to isolate it. The dashed red line "
        "is the Pareto front of the points that meet the constraint; greyed points fail it. "
        "Diamonds are group means with 95% error bars (Student's t).",
        lambda t, v, uid, gb: interactive.explorer(v, uid, gb),
    ),
    "curves": (
        "Solid: validation, dotted: training. One colour per group of repeats (thin: each "
        "trial, thick: the group's mean); one row per stage. Click a legend entry to hide a group, double-click to isolate it.",
        lambda t, v, uid, gb: interactive.curves(t.get(C.EPOCHS), v, uid, gb),
    ),
    "latency": (
        "Median forward latency at the smallest batch size, measured after warm-up with the "
        "device synchronized. With one input size, a sorted chart of the trials.",
        lambda t, v, uid, gb: interactive.latency_view(t.get(C.LATENCY), v, uid, gb),
    ),
    "memory": (
        "The sweep's peak-memory figure per trial, sorted; hover for the trial.",
        lambda t, v, uid, gb: interactive.memory_view(v, uid, gb),
    ),
}


def figure_section(
    sid: str,
    title: str,
    draw: PlotFn,
    tables: Tables,
    view: pd.DataFrame,
    *,
    static: bool = True,
    group_by: str | None = None,
) -> Section | None:
    """One figure per sweep that has the data (one figure in all for a single sweep)."""
    sweeps = _sweeps(view) or [(None, view)]
    parts = []
    caption = ""
    for i, (sweep, v) in enumerate(sweeps):
        sub = Tables(
            root=tables.root, frames={n: for_sweep(df, sweep) for n, df in tables.frames.items()}
        )
        heading = f"Sweep {sweep}" if len(sweeps) > 1 else ""
        if not static and sid in INTERACTIVE:
            caption, idraw = INTERACTIVE[sid]
            html = idraw(sub, v, f"fig-{sid}-{i}", group_by)
            if html is None:
                continue
            extra = latency_table(sub.get(C.LATENCY), v) if sid == "latency" else []
            parts.append(Part(heading=heading, html=[html], tables=extra))
            continue
        plot = draw(sub, v, plots.Palette(list(v[C.LABEL]) if C.LABEL in v else []))
        if plot is None:
            continue
        caption = plot.caption
        if len(sweeps) > 1:
            plot.name = f"{plot.name}-{_slug(str(sweep))}"
        extra = latency_table(sub.get(C.LATENCY), v) if sid == "latency" else []
        parts.append(
            Part(heading=f"Sweep {sweep}" if len(sweeps) > 1 else "", plots=[plot], tables=extra)
        )
    if not parts:
        return None
    return Section(sid, title, intro=caption, parts=parts)


def build_sections(
    tables: Tables, *, static: bool = True, group_by: str | None = None
) -> list[Section]:
    """Every section whose data exists, in reading order; `static=False` draws the figures
    that have an interactive version with plotly, `group_by` names the pooled keys."""
    view = trial_view(tables)
    builders: list[Callable[[], Section | None]] = [
        lambda: overview(tables, view),
        lambda: recommendations_section(view, group_by),
        lambda: summary(view, group_by),
        lambda: speedups_section(view),
        lambda: cost_section(view),
        *[
            (
                lambda sid=sid, title=title, draw=draw: figure_section(
                    sid, title, draw, tables, view, static=static, group_by=group_by
                )
            )
            for sid, title, draw in FIGURES
        ],
        lambda: environment(tables),
    ]
    sections: list[Section] = []
    problems: list[str] = []
    for build in builders:
        try:
            section = build()
        except Exception as err:  # one broken figure must not cost the user the whole report
            log.warning("report section failed: %r", err, exc_info=True)
            problems.append(f"{type(err).__name__}: {err}")
            continue
        if section is not None:
            sections.append(section)
    if problems:
        sections.append(
            Section("problems", "Sections that could not be drawn", parts=[Part(bullets=problems)])
        )
    return sections
