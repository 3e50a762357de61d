"""The interactive figures' data: the one-size latency view is a sorted chart, the explorer
carries every trial's parameters and metrics and the search's `pareto/front` where present."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report import interactive
from orchestrator.report.tables import load_tables, trial_view
from tests.report_tables import write_all, write_seeds


def _figure_json(fragment: str) -> dict:
    """The data and layout plotly's `to_html` passes to Plotly.newPlot."""
    args = re.search(
        r"Plotly\.newPlot\(\s*\"[^\"]+\",\s*(\[.*?\]),\s*(\{.*?\}),\s*\{", fragment, re.S
    )
    assert args, fragment[:500]
    return {"data": json.loads(args.group(1)), "layout": json.loads(args.group(2))}


def test_one_input_size_gives_a_sorted_chart(tmp_path) -> None:
    out = write_seeds(tmp_path / "out", np.random.default_rng(0), lrs=(1e-3,), seeds=6)
    tables = load_tables(out)
    view = trial_view(tables)
    # Each trial its own group here: one row per trial, sorted by latency.
    html = interactive.latency_view(tables.get(C.LATENCY), view, "lat", group_by="optim.lr")
    fig = _figure_json(html)
    order = fig["layout"]["yaxis"]["categoryarray"]
    by_label = {y: x for t in fig["data"] for y, x in zip(t["y"], t["x"], strict=True)}
    assert len(order) == 6 and [by_label[k] for k in order] == sorted(by_label.values())
    # With the seeds pooled: one row per group, at its mean, with a 95% error bar.
    fig = _figure_json(interactive.latency_view(tables.get(C.LATENCY), view, "lat2", None))
    (trace,) = fig["data"]
    assert trace["error_x"]["visible"] and "n = 6" in trace["hovertemplate"]


def test_explorer_data_and_search_front(tmp_path) -> None:
    view = trial_view(load_tables(write_all(tmp_path / "out")))
    data = interactive.explorer_data(view)
    assert data is not None and not data["searchFront"]
    assert len(data["trials"]) == len(view)
    first = data["trials"][0]
    assert first["label"] in first["hover"] and "best/val/acc" in first["m"]
    assert data["y"] == "best/val/acc" and data["x"] == C.GMACS
    view = view.assign(**{"pareto/front": pd.Series(False, index=view.index)})
    view.loc[view.index[0], "pareto/front"] = True
    data = interactive.explorer_data(view)
    assert data["searchFront"] and [t["front"] for t in data["trials"]].count(True) == 1
