"""Repeats pooled into groups: trials that differ only in `seed` (or in keys the user names).

`groups(trials, group_by=None)` is the pandas entry point: one row per group with `n`, and per
metric its mean, standard deviation and 95% confidence interval of the mean (Student's t with
n - 1 degrees of freedom; no interval for n = 1). `group_keys(trials, group_by)` says which
columns define a group: the config columns that vary within a sweep, minus the pooled keys,
plus `sweep` and `stage`. `group_labels` names each trial's group for the report's legends.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report.tables import _labels, config_columns, varying_columns

# Keys pooled by default: trials that differ only in these are repeats of one experiment.
DEFAULT_POOLED = ("seed",)
GROUP = "group"
N = "n"
TRIALS_COL = "trial_ids"
STATS = ("mean", "std", "ci95_lo", "ci95_hi")


def t_quantile(df: int, q: float = 0.975) -> float:
    """Student's t quantile (scipy); `df` < 1 has none (nan)."""
    if df < 1:
        return float("nan")
    from scipy.stats import t

    return float(t.ppf(q, df))


def mean_ci(values: Iterable[float]) -> tuple[int, float, float, float, float]:
    """(n, mean, std, ci95_lo, ci95_hi) of the finite values; std and CI are nan for n < 2."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return 0, math.nan, math.nan, math.nan, math.nan
    mean = float(v.mean())
    if n < 2:
        return 1, mean, math.nan, math.nan, math.nan
    std = float(v.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return n, mean, std, mean - half, mean + half


def pooled_keys(group_by: str | Iterable[str] | None) -> tuple[str, ...]:
    """The keys whose values are pooled (default `seed`); `--group-by a,b` names others."""
    if group_by is None:
        return DEFAULT_POOLED
    if isinstance(group_by, str):
        group_by = group_by.split(",")
    keys = tuple(k.strip() for k in group_by if k.strip())
    if not keys:
        raise ValueError(f"group_by={group_by!r} names no key; give e.g. 'seed' or 'seed,optim.lr'")
    return keys


def group_keys(trials: pd.DataFrame, group_by: str | Iterable[str] | None = None) -> list[str]:
    """Columns that tell groups apart: what each sweep varied, minus the pooled keys."""
    pooled = set(pooled_keys(group_by))
    keys: list[str] = []
    sweeps = trials.groupby(C.SWEEP, sort=False) if C.SWEEP in trials else [(None, trials)]
    for _, g in sweeps:
        for c in varying_columns(g):
            if c not in pooled and c not in keys:
                keys.append(c)
    front = [c for c in (C.SWEEP, C.STAGE) if c in trials and c not in pooled]
    return front + [c for c in keys if c not in front]


def _key_frame(trials: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    # Lists/dicts (a JSON config value) and NaN compare by their text.
    return trials[keys].map(lambda v: "" if v is None or v is pd.NA else repr(v))


def group_ids(trials: pd.DataFrame, group_by: str | Iterable[str] | None = None) -> pd.Series:
    """An integer per trial: equal for trials of one group, in order of first appearance."""
    keys = group_keys(trials, group_by)
    if trials.empty:
        return pd.Series(0, index=trials.index)
    if not config_columns(trials):  # nothing says what a trial ran: each is its own group
        return pd.Series(range(len(trials)), index=trials.index)
    if not keys:
        return pd.Series(0, index=trials.index)
    frame = _key_frame(trials, keys)
    return frame.groupby(keys, sort=False).ngroup()


def group_labels(trials: pd.DataFrame, group_by: str | Iterable[str] | None = None) -> pd.Series:
    """A short name per trial's group (model and the searched values other than the pooled keys)."""
    ids = group_ids(trials, group_by)
    # The trials' own names (model, what each stage searched) without the pooled keys.
    pooled = [c for c in pooled_keys(group_by) if c in trials and c not in (C.SWEEP, C.TRIAL_ID)]
    names = _labels(trials.drop(columns=pooled), unique=False) if C.TRIAL_ID in trials else None
    labels = pd.Series("", index=trials.index, dtype=object)
    for gid, g in trials.groupby(ids, sort=False):
        name = str(names[g.index[0]]) if names is not None else ""
        labels[g.index] = name or f"group {gid}"
    if C.SWEEP in trials and trials[C.SWEEP].nunique() > 1:
        labels = trials[C.SWEEP].astype(str) + ": " + labels
    return labels


def metric_columns(trials: pd.DataFrame) -> list[str]:
    """Numeric metric columns (names with a `/`, plus the report's cost figures)."""
    extra = {C.LATENCY_MS, C.PEAK_MEM_MB, C.N_EPOCHS}
    out = []
    for c in trials.columns:
        named = ("/" in c or c in extra) and not c.startswith((C.ENV_PREFIX, *C.START_PREFIX))
        x = trials[c]
        numeric = pd.api.types.is_numeric_dtype(x) and not pd.api.types.is_bool_dtype(x)
        if named and numeric and x.notna().any():
            out.append(c)
    return out


def groups(
    trials: pd.DataFrame,
    group_by: str | Iterable[str] | None = None,
    metrics: list[str] | None = None,
) -> pd.DataFrame:
    """One row per group of repeats, with `n` and `<metric> mean|std|ci95_lo|ci95_hi`.

    `trials`: one row per trial (`pd.read_parquet("results/trials")`, or the report's trial
    view). `group_by`: the keys pooled into one group (default `seed`; a string may list several,
    comma-separated). `metrics`: the columns to summarise (default: every numeric metric).
    The row order is the order in which each group first appears.
    """
    if trials.empty:
        return pd.DataFrame()
    keys = group_keys(trials, group_by)
    metrics = metric_columns(trials) if metrics is None else [m for m in metrics if m in trials]
    ids = group_ids(trials, group_by)
    labels = group_labels(trials, group_by)
    rows = []
    for _gid, g in trials.groupby(ids, sort=False):
        row: dict[str, object] = {GROUP: labels[g.index[0]]}
        for k in keys:
            row[k] = g[k].iloc[0]
        row[N] = len(g)
        row[TRIALS_COL] = ",".join(g[C.TRIAL_ID].astype(str)) if C.TRIAL_ID in g else ""
        for m in metrics:
            n, mean, std, lo, hi = mean_ci(pd.to_numeric(g[m], errors="coerce"))
            row[f"{m} mean"], row[f"{m} std"] = mean, std
            row[f"{m} ci95_lo"], row[f"{m} ci95_hi"] = lo, hi
            if n != len(g):
                row[f"{m} n"] = n
        rows.append(row)
    return pd.DataFrame(rows)


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """True when two intervals share a point (a missing bound: unknown, so they overlap)."""
    if any(math.isnan(x) for x in (*a, *b)):
        return True
    return a[0] <= b[1] and b[0] <= a[1]


def has_repeats(trials: pd.DataFrame, group_by: str | Iterable[str] | None = None) -> bool:
    """True when some group holds more than one trial."""
    return not trials.empty and bool(group_ids(trials, group_by).value_counts().max() > 1)


def mean_view(trials: pd.DataFrame, group_by: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The trials folded into one row per group, each metric its group's mean, labelled by the
    group: what the report's findings read when trials repeat."""
    stats = groups(trials, group_by)
    if stats.empty:
        return stats
    means = {c: c[: -len(" mean")] for c in stats.columns if c.endswith(" mean")}
    out = stats[[c for c in stats.columns if not c.endswith((" std", " ci95_lo", " ci95_hi"))]]
    out = out.rename(columns=means)
    out[C.LABEL] = stats[GROUP]
    for c in (C.STATUS, C.ERROR, C.SMOKE):
        out = out.drop(columns=c, errors="ignore")
    return out.reset_index(drop=True)
