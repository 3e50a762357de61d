"""`python -m orchestrator compare A B`: two sweeps side by side, each figure with a verdict.

A and B are output folders (`--output` of a sweep, or a folder of outputs), or one sweep in one
(`results:perf_tuning`). Trials are matched by what they searched (the config keys that vary
within either side), `model.name`, `dataset.name`, `trainable` and `stage`; trials that differ
only in the pooled keys (`seed`, or `--group-by`) are one group and are pooled.

Per match and metric: B/A for costs (epoch time, samples/s, step p50, latency p50 per measured
point, peak memory, MACs, energy), B - A in points for accuracy and F1, and a verdict:

- the noise band is estimated from repeats: seeds (one value per trial), else the epochs after
  the first (time metrics; their median and scaled MAD, so one stalled epoch does not decide),
  else each latency point's own stdev over its repeats; the last two see only the spread inside
  one run, and the output says so (`caveats`);
- time-like figures (times, throughput, latency, energy) use the spread of single repeats,
  `t * sqrt(sA^2 + sB^2)`: repeats inside one run share the machine's state, so the spread of
  their mean understates the drift between two runs; other figures (accuracy, memory) use
  Welch's 95% interval of the difference of means, `t * sqrt(sA^2/nA + sB^2/nB)`;
- a change within max(threshold, noise) is "within noise"; beyond it, "regression" when it is
  worse (slower, larger, less accurate), else "improvement". Accuracy and F1 use
  `acc_threshold` (points) instead of the relative threshold.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report.groups import pooled_keys, t_quantile
from orchestrator.report.tables import (
    Tables,
    for_sweep,
    load_tables,
    reported_latency,
    trial_view,
    varying_columns,
)

REGRESSION, IMPROVEMENT, WITHIN = "regression", "improvement", "within noise"
MATCH_ALWAYS = (C.MODEL_NAME, "dataset.name", C.TRAINABLE, C.STAGE)
# Per-epoch time figures: samples are the epochs after the first (warm-up, compilation).
EPOCH_TIMES = ((C.EPOCH_S, False), (C.SAMPLES_PER_S, True), (C.STEP_MS_P50, False))
ACCURACY = (C.BEST_PREFIX + C.VAL_ACC, C.BEST_PREFIX + C.VAL_F1)
STATIC_COSTS = (C.GMACS, C.PARAMS_TOTAL)
ENERGY_PREFIXES = ("energy/", "cost/")
# Fingerprint keys that name one run, not the environment (they always differ).
RUN_IDS = ("node_id", "_pid", "run_id", "trial_id")
# A latency point's stdev comes from many timed repeats: its t quantile is the normal one.
LARGE_DF = 1000
MAD_TO_STD = 1.4826
ONE_RUN = "epochs after the first"


@dataclass
class Side:
    """One side of the comparison: its trials (one row each) and tables."""

    spec: str
    view: pd.DataFrame
    tables: Tables
    sweep: str | None


@dataclass
class Row:
    """One figure of one match."""

    match: str
    metric: str
    kind: str  # "ratio" (B/A) or "diff" (B - A, in points)
    a: float
    b: float
    n_a: int
    n_b: int
    change: float  # ratio B/A, or the difference in points
    noise: float | None  # the band's half-width: relative (ratio) or points (diff)
    noise_from: str
    verdict: str


def parse_threshold(text: str | float) -> float:
    """`5%` or `0.05` -> 0.05; raise on anything else or a value outside (0, 10)."""
    s = str(text).strip()
    try:
        v = float(s[:-1]) / 100 if s.endswith("%") else float(s)
    except ValueError:
        raise ValueError(f"--threshold {text!r}: give a relative change, e.g. 5% or 0.05") from None
    if not 0 <= v < 10:
        raise ValueError(f"--threshold {text!r}: must be between 0% and 1000%")
    return v


def load_side(spec: str) -> Side:
    """`DIR` or `DIR:SWEEP` -> its trials; raise FileNotFoundError / ValueError naming the spec."""
    path, sweep = spec, None
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and "/" not in tail and not Path(spec).exists():
        path, sweep = head, tail
    tables = load_tables(path)
    if tables.empty:
        raise FileNotFoundError(f"{spec!r}: no Parquet tables under {path!r}")
    if sweep is not None:
        tables = Tables(
            root=tables.root, frames={n: for_sweep(df, sweep) for n, df in tables.frames.items()}
        )
    view = trial_view(tables)
    if view.empty:
        sweeps = sorted(load_tables(path).get(C.TRIALS).get(C.SWEEP, pd.Series()).unique())
        raise ValueError(f"{spec!r}: no trials of sweep {sweep!r}; sweeps there: {sweeps}")
    return Side(spec, view, tables, sweep)


def match_keys(a: Side, b: Side, group_by: str | None = None) -> list[str]:
    """What a trial is matched by: keys either side searched, model, dataset, trainable, stage."""
    pooled = set(pooled_keys(group_by))
    keys: list[str] = []
    multi = (
        a.sweep is None
        and b.sweep is None
        and any(C.SWEEP in s.view and s.view[C.SWEEP].nunique() > 1 for s in (a, b))
    )
    if multi:
        keys.append(C.SWEEP)
    for side in (a, b):
        sweeps = side.view.groupby(C.SWEEP) if C.SWEEP in side.view else [(None, side.view)]
        for _, g in sweeps:
            for c in varying_columns(g):
                if c not in pooled and c not in keys and c != C.STAGE:
                    keys.append(c)
    keys += [c for c in MATCH_ALWAYS if c not in keys and (c in a.view or c in b.view)]
    return keys


def _key_of(view: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Each trial's match key as text: `key=value` for every match key, in order."""

    def text(v: object) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:g}" if isinstance(v, float) else str(v)

    out = pd.Series("", index=view.index, dtype=object)
    for k in keys:
        col = view[k].map(text) if k in view else pd.Series("-", index=view.index)
        out = out + k + "=" + col + "\x1f"
    return out


def display_names(keys: list[str]) -> dict[str, str]:
    """Short names for match keys: only the parts that differ between them (`lr=0.001`)."""
    parsed = [dict(p.split("=", 1) for p in k.split("\x1f") if p) for k in keys]
    varying = [c for c in (parsed[0] if parsed else {}) if len({p.get(c) for p in parsed}) > 1]
    names = {}
    for k, p in zip(keys, parsed, strict=True):
        bits = [f"{c.rsplit('.', 1)[-1]}={p[c]}" for c in varying if p.get(c) not in (None, "-")]
        model = p.get(C.MODEL_NAME)
        if C.MODEL_NAME not in varying and model not in (None, "-"):
            bits.insert(0, model)
        names[k] = " ".join(bits) or "all"
    return names


def _column_stats(
    ta: pd.DataFrame, tb: pd.DataFrame, col: str
) -> tuple[tuple[int, float, float], tuple[int, float, float]]:
    """`_stats` of one column on side A and on side B (non-numbers dropped)."""
    return (
        _stats(pd.to_numeric(ta[col], errors="coerce").tolist()),
        _stats(pd.to_numeric(tb[col], errors="coerce").tolist()),
    )


def _stats(values: list[float], robust: bool = False) -> tuple[int, float, float]:
    """(n, centre, spread): mean and stdev; with `robust`, the median and the scaled median
    absolute deviation (1.4826 x MAD estimates the stdev of normal samples), which one stalled
    epoch among a handful neither drags nor widens."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if len(v) == 0:
        return 0, math.nan, math.nan
    if len(v) == 1:
        return 1, float(v[0]), math.nan
    if robust:
        med = float(np.median(v))
        return len(v), med, MAD_TO_STD * float(np.median(np.abs(v - med)))
    return len(v), float(v.mean()), float(v.std(ddof=1))


def _epoch_samples(side: Side, trials: pd.DataFrame, col: str) -> tuple[list[float], str]:
    """One value per trial where the group repeats, else the trial's epochs after the first."""
    ep = side.tables.get(C.EPOCHS)
    if ep.empty or col not in ep or not all(k in ep for k in C.KEY):
        vals = pd.to_numeric(trials.get(col), errors="coerce") if col in trials else []
        return [float(x) for x in vals], "seeds" if len(trials) > 1 else "none"
    rows = ep.merge(trials[list(C.KEY)], on=list(C.KEY))
    rows = rows[pd.to_numeric(rows[col], errors="coerce").notna()]
    if C.EPOCH in rows:
        later = rows[rows[C.EPOCH] > rows.groupby(list(C.KEY))[C.EPOCH].transform("min")]
        rows = later if not later.empty else rows
    per_trial = rows.groupby(list(C.KEY))[col].mean()
    if len(per_trial) > 1:
        return per_trial.astype(float).tolist(), "seeds"
    vals = rows[col].astype(float).tolist()
    return vals, ONE_RUN if len(vals) > 1 else "none"


def verdict(change: float, band: float, higher_is_better: bool) -> str:
    """`change`: B/A - 1 or B - A; `band`: the half-width of "no change"."""
    if abs(change) <= band:
        return WITHIN
    better = change > 0 if higher_is_better else change < 0
    return IMPROVEMENT if better else REGRESSION


def _row(
    match: str,
    metric: str,
    a: tuple[int, float, float],
    b: tuple[int, float, float],
    *,
    kind: str,
    higher: bool,
    threshold: float,
    timelike: bool,
    noise_from: str,
    df: int | None = None,
) -> Row | None:
    (na, ma, sa), (nb, mb, sb) = a, b
    if na == 0 or nb == 0 or not np.isfinite(ma) or not np.isfinite(mb):
        return None
    spreads = [(s, n) for s, n in ((sa, na), (sb, nb)) if np.isfinite(s)]
    noise = None
    if spreads:
        df = df or max(1, min(n for _, n in spreads) - 1)
        if timelike:  # the difference of two single repeats
            var = sum(s * s for s, _ in spreads) * (2 if len(spreads) == 1 else 1)
        else:  # Welch: the difference of the means
            var = sa * sa / na if np.isfinite(sa) else 0.0
            var += sb * sb / nb if np.isfinite(sb) else 0.0
        half = t_quantile(df) * math.sqrt(var)
        noise = 100 * half if kind == "diff" else (half / abs(ma) if ma else None)
    if kind == "diff":
        change, delta = 100 * (mb - ma), 100 * (mb - ma)
    else:
        if ma == 0:
            return None
        change = mb / ma
        delta = change - 1
    band = max(threshold, noise or 0.0)
    return Row(
        match,
        metric,
        kind,
        ma,
        mb,
        na,
        nb,
        change,
        noise,
        noise_from if noise is not None else "none (threshold only)",
        verdict(delta, band, higher),
    )


def _latency_points(side: Side, trials: pd.DataFrame) -> dict[str, tuple[list[float], float]]:
    """Per measured point (input size, batch size, precision): per-trial p50s and a stdev."""
    lat = reported_latency(side.tables.get(C.LATENCY))
    if lat.empty or C.LAT_P50 not in lat or not all(k in lat for k in C.KEY):
        return {}
    rows = lat.merge(trials[list(C.KEY)], on=list(C.KEY))
    dims = [c for c in (C.LAT_INPUT_SIZE, C.LAT_BATCH_SIZE, C.LAT_PRECISION) if c in rows]
    std_col = next((c for c in C.LAT_STD if c in rows), None)
    out = {}
    for key, g in rows.groupby(dims, sort=True) if dims else [((), rows)]:
        key = key if isinstance(key, tuple) else (key,)
        bits = dict(zip(dims, key, strict=True))
        name = "latency p50 " + " ".join(
            f"{v}px" if d == C.LAT_INPUT_SIZE else f"bs{v}" if d == C.LAT_BATCH_SIZE else str(v)
            for d, v in bits.items()
        )
        std = float(g[std_col].median()) if std_col and g[std_col].notna().any() else math.nan
        out[name] = (g[C.LAT_P50].astype(float).tolist(), std)
    return out


def compare_sides(
    a: Side,
    b: Side,
    *,
    threshold: float = 0.05,
    acc_threshold: float = 1.0,
    metrics: list[str] | None = None,
    group_by: str | None = None,
) -> tuple[list[Row], dict[str, list[str]]]:
    """Every matched figure with its verdict, and the match keys found on one side only."""
    keys = match_keys(a, b, group_by)
    ka, kb = _key_of(a.view, keys), _key_of(b.view, keys)
    matches = [k for k in dict.fromkeys(ka) if k in set(kb)]
    every = list(dict.fromkeys([*ka, *kb]))
    shown = display_names(every)
    rows: list[Row] = []
    for key in matches:
        ta, tb = a.view[ka == key], b.view[kb == key]
        m = shown[key]
        seeds = "seeds" if min(len(ta), len(tb)) > 1 else "none"
        for col, higher in EPOCH_TIMES:
            sa, fa = _epoch_samples(a, ta, col)
            sb, fb = _epoch_samples(b, tb, col)
            src = fa if fa == fb else f"{fa} / {fb}"
            rows.append(
                _row(
                    m,
                    col,
                    _stats(sa, robust=fa == ONE_RUN),
                    _stats(sb, robust=fb == ONE_RUN),
                    kind="ratio",
                    higher=higher,
                    threshold=threshold,
                    timelike=True,
                    noise_from=src,
                )
            )
        pa, pb = _latency_points(a, ta), _latency_points(b, tb)
        for name in pa.keys() & pb.keys():
            (va, std_a), (vb, std_b) = pa[name], pb[name]
            sa_, sb_ = _stats(va), _stats(vb)
            src = "seeds"
            if sa_[0] < 2 or sb_[0] < 2:  # one trial each: the point's own spread
                sa_, sb_, src = (sa_[0], sa_[1], std_a), (sb_[0], sb_[1], std_b), "latency stdev"
            rows.append(
                _row(
                    m,
                    name,
                    sa_,
                    sb_,
                    kind="ratio",
                    higher=False,
                    threshold=threshold,
                    timelike=True,
                    noise_from=src,
                    df=LARGE_DF if src == "latency stdev" else None,
                )
            )
        mem = [c for c in a.view if c.startswith(C.MEM_PREFIX) and c.endswith(C.MEM_SUFFIX)]
        energy = [c for c in a.view if c.startswith(ENERGY_PREFIXES)]
        for col in [*mem, *STATIC_COSTS, *energy]:
            if col not in tb:
                continue
            timelike = col in energy
            rows.append(
                _row(
                    m,
                    col,
                    *_column_stats(ta, tb, col),
                    kind="ratio",
                    higher=False,
                    threshold=threshold,
                    timelike=timelike,
                    noise_from=seeds,
                )
            )
        for col in ACCURACY:
            if col not in ta or col not in tb:
                continue
            rows.append(
                _row(
                    m,
                    col,
                    *_column_stats(ta, tb, col),
                    kind="diff",
                    higher=True,
                    threshold=acc_threshold,
                    timelike=False,
                    noise_from=seeds,
                )
            )
    out = [r for r in rows if r is not None]
    if metrics:
        out = [r for r in out if any(f in r.metric for f in metrics)]
    unmatched = {
        "a": [shown[k] for k in dict.fromkeys(ka) if k not in set(kb)],
        "b": [shown[k] for k in dict.fromkeys(kb) if k not in set(ka)],
    }
    return out, unmatched


def environment_diff(a: Side, b: Side) -> list[tuple[str, str, str]]:
    """(key, A's values, B's values) for each `env/*` fingerprint that differs."""
    cols = sorted(
        c
        for c in {c for s in (a, b) for c in s.view if c.startswith(C.ENV_PREFIX)}
        if not c.endswith(RUN_IDS)
    )

    def values(s: Side, c: str) -> str:
        if c not in s.view:
            return "-"
        return ", ".join(sorted(s.view[c].dropna().astype(str).unique())) or "-"

    return [(c, values(a, c), values(b, c)) for c in cols if values(a, c) != values(b, c)]


def caveats(rows: list[Row]) -> list[str]:
    """What the verdicts cannot see: time figures whose band comes from inside one run."""
    single = [r for r in rows if r.noise_from in (ONE_RUN, "latency stdev")]
    if not single:
        return []
    flagged = sum(r.verdict != WITHIN for r in single)
    return [
        f"{len(single)} time figures ({flagged} flagged) rest on one run per side: their band is "
        "the spread inside each run, not between runs; a second run of the same sweep can differ "
        "by more (on a busy or small machine, tens of %). Repeat the trials (seeds, or several "
        "outputs in one folder) before trusting such a verdict."
    ]


def _fmt(v: float | None) -> str:
    if v is None or not np.isfinite(v):
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"


def _change_text(r: Row) -> str:
    if r.kind == "diff":
        return f"{r.change:+.2f} pt"
    return f"x{r.change:.3f}"


def _noise_text(r: Row) -> str:
    if r.noise is None:
        return "-"
    return f"±{r.noise:.2f} pt" if r.kind == "diff" else f"±{100 * r.noise:.1f}%"


TABLE_HEADER = ("match", "metric", "A", "B", "n A/B", "B/A or B-A", "noise", "from", "verdict")


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [
        [
            r.match,
            r.metric,
            _fmt(r.a),
            _fmt(r.b),
            f"{r.n_a}/{r.n_b}",
            _change_text(r),
            _noise_text(r),
            r.noise_from,
            r.verdict,
        ]
        for r in rows
    ]


def format_table(rows: list[list[str]], header: tuple[str, ...] = TABLE_HEADER) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def write_html(
    path: Path, a: Side, b: Side, rows: list[Row], env: list, unmatched: dict, threshold: float
) -> Path:
    """A report page with the compare section (and the differing environment first)."""
    from datetime import UTC, datetime

    from orchestrator.report.page import render_page
    from orchestrator.report.sections import Cell, HtmlTable, Part, Section

    sections = []
    if env:
        t = HtmlTable(
            "Environments that differ",
            ["key", "A", "B"],
            [[Cell(k), Cell(x), Cell(y)] for k, x, y in env],
            id="compare-env",
        )
        sections.append(Section("environment", "Environment differences", parts=[Part(tables=[t])]))
    body = [[Cell(c) for c in r] for r in table_rows(rows)]
    marks = {i for i, r in enumerate(rows) if r.verdict == REGRESSION}
    t = HtmlTable(
        f"A = {a.spec}, B = {b.spec}: {len(rows)} figures",
        list(TABLE_HEADER),
        body,
        marks,
        id="compare",
    )
    counts = {v: sum(r.verdict == v for r in rows) for v in (REGRESSION, IMPROVEMENT, WITHIN)}
    bullets = [f"{v}: {n}" for v, n in counts.items()]
    bullets.append(f"threshold {100 * threshold:g}% (costs); rows marked: regressions")
    bullets += caveats(rows)
    for side, keys in unmatched.items():
        if keys:
            bullets.append(f"only in {side.upper()}: {'; '.join(keys[:20])}")
    sections.append(
        Section(
            "compare",
            "Compare",
            intro="B/A for costs, B - A in points for accuracy and F1; the verdict weighs the "
            "change against the threshold and the noise from repeats (docs/report.md).",
            parts=[Part(bullets=bullets, tables=[t])],
        )
    )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    html = render_page(
        title="lvmbench compare",
        subtitle=f"A = {a.spec}, B = {b.spec} - written {stamp}",
        sections=sections,
        root=f"{a.spec} and {b.spec}",
        plot_dir="",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def run(args: argparse.Namespace) -> int:
    """`python -m orchestrator compare`: 0, or 1 with --fail-on regression and a regression;
    2 on bad input."""
    try:
        threshold = parse_threshold(args.threshold)
        a, b = load_side(args.a), load_side(args.b)
        rows, unmatched = compare_sides(
            a, b, threshold=threshold, metrics=args.metric, group_by=args.group_by
        )
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    env = environment_diff(a, b)
    regressions = [r for r in rows if r.verdict == REGRESSION]
    if args.json:
        print(
            json.dumps(
                {
                    "a": a.spec,
                    "b": b.spec,
                    "threshold": threshold,
                    "environment_differs": [{"key": k, "a": x, "b": y} for k, x, y in env],
                    "rows": [asdict(r) for r in rows],
                    "unmatched": unmatched,
                    "regressions": len(regressions),
                    "caveats": caveats(rows),
                },
                indent=1,
                default=lambda v: None,
            )
        )
    else:
        if env:
            print("Environments differ (they explain most differences):")
            print(format_table([list(e) for e in env], ("key", "A", "B")))
            print()
        if not rows:
            print(
                "no trial of A matches a trial of B (match keys: searched parameters, model, "
                "dataset, trainable, stage)"
            )
        else:
            print(format_table(table_rows(rows)))
        for side, keys in unmatched.items():
            if keys:
                print(f"only in {side.upper()}: {'; '.join(keys)}")
        counts = {v: sum(r.verdict == v for r in rows) for v in (REGRESSION, IMPROVEMENT, WITHIN)}
        print(", ".join(f"{n} {v}" for v, n in counts.items()))
        for note in caveats(rows):
            print(f"note: {note}")
    if args.html:
        path = write_html(Path(args.html), a, b, rows, env, unmatched, threshold)
        print(f"compare page: {path}", file=sys.stderr if args.json else sys.stdout)
    if args.fail_on == "regression" and regressions:
        return 1
    return 0
