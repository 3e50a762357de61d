"""Pareto fronts of accuracy against a cost (GMACs, latency, memory)."""

from __future__ import annotations

import pandas as pd


def pareto_mask(cost: pd.Series, score: pd.Series) -> pd.Series:
    """True for the rows no other row beats: none is as cheap and as good, and better in one.

    Lower `cost` and higher `score` are better; a row with a missing value is never on the front.
    """
    ok = cost.notna() & score.notna()
    mask = pd.Series(False, index=cost.index)
    c, s = cost[ok].astype(float), score[ok].astype(float)
    for idx in c.index:
        dominated = ((c <= c[idx]) & (s >= s[idx]) & ((c < c[idx]) | (s > s[idx]))).any()
        mask[idx] = not dominated
    return mask


def front_line(cost: pd.Series, score: pd.Series) -> tuple[list[float], list[float]]:
    """The front's points in order of cost, ready to draw as a staircase line."""
    mask = pareto_mask(cost, score)
    pts = sorted(zip(cost[mask].astype(float), score[mask].astype(float), strict=True))
    return [p[0] for p in pts], [p[1] for p in pts]


def search_front(view: pd.DataFrame) -> pd.Series | None:
    """The `pareto/front` marks a multi-objective search wrote into `trials` (None: no such
    column), as booleans on `view`'s index."""
    if "pareto/front" not in view.columns:
        return None
    return view["pareto/front"].map(lambda v: bool(v) if pd.notna(v) else False).astype(bool)
