"""The report's "speed-ups" section: each tuned trial against its baseline.

A sweep that compares speed techniques (e.g. `sweeps/perf_tuning.yaml`) runs the same models on
the same data as a baseline stage and one or more tuned stages. A trial's baseline is the trial of
the same sweep, model (`model.name`) and dataset (`dataset.name`) whose stage name contains
`baseline`. Per tuned trial the section shows: time ratios (epoch and whole trial, tuned /
baseline: below 1 is faster), the accuracy and F1 differences in points, and the peak-memory
ratio (the sweep's memory figure, as in the other sections).
"""

from __future__ import annotations

import math

import pandas as pd

from orchestrator.report import columns as C

BASELINE_WORD = "baseline"
MATCH = (C.MODEL_NAME, "dataset.name")
TOTAL_S = "time/total_s"
F1 = "val/f1_macro"

# (header, tuned column, kind): ratio = tuned / baseline, points = 100 x (tuned - baseline).
COMPARISONS = (
    ("epoch time ratio", C.EPOCH_S, "ratio"),
    ("total time ratio", TOTAL_S, "ratio"),
    ("accuracy diff (points)", C.BEST_PREFIX + C.VAL_ACC, "points"),
    ("F1 diff (points)", C.BEST_PREFIX + F1, "points"),
    ("memory ratio", C.PEAK_MEM_MB, "ratio"),
)


def _number(value: object) -> float | None:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def compare(tuned: float | None, base: float | None, kind: str) -> float | None:
    """tuned / baseline for a ratio (None when either is missing or the baseline is 0)."""
    if tuned is None or base is None:
        return None
    if kind == "ratio":
        return tuned / base if base else None
    return 100.0 * (tuned - base)


def speedup_rows(sweep_trials: pd.DataFrame) -> list[dict[str, object]]:
    """One dict per tuned trial of one sweep: its stage, model, dataset and the comparisons."""
    g = sweep_trials
    if C.STAGE not in g or not all(c in g for c in MATCH):
        return []
    stages = g[C.STAGE].astype("string").fillna("")
    is_base = stages.str.contains(BASELINE_WORD, regex=False)
    if not is_base.any() or is_base.all():
        return []
    baselines = g[is_base].drop_duplicates(list(MATCH), keep="last").set_index(list(MATCH))
    rows: list[dict[str, object]] = []
    for _, trial in g[~is_base].iterrows():
        key = tuple(trial[c] for c in MATCH)
        if key not in baselines.index:
            continue
        base = baselines.loc[key]
        row: dict[str, object] = {
            "stage": trial[C.STAGE],
            "baseline stage": base[C.STAGE],
            C.MODEL_NAME: key[0],
            "dataset.name": key[1],
        }
        for header, col, kind in COMPARISONS:
            tuned_v = _number(trial.get(col)) if col in g else None
            base_v = _number(base.get(col)) if col in g else None
            row[header] = compare(tuned_v, base_v, kind)
        rows.append(row)
    return rows
