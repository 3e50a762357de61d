"""The report's interactive figures (plotly): HTML fragments that use the page's one plotly.js.

- `explorer`: accuracy against a cost, axes chosen by the reader, the Pareto front drawn, a
  constraint (e.g. latency <= 20 ms) that greys what fails it and updates the best trial or
  group within it, group means with 95% error bars, and a parallel-coordinates view of the
  searched parameters against the chosen metric. Data and script are embedded (EXPLORER_JS).
- `curves`: training curves, one colour per group, faceted by stage, legend toggles a group.
- `sorted_bars`: one value per trial (latency at one input size, peak memory) as a sorted chart.
- `latency_lines`: latency per input size per model when trials measured several sizes.

Every figure goes through `fragment` (plotly's `to_html` without the library: the page embeds
plotly.js once, `page.py`).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report.groups import (
    group_labels,
    mean_ci,
    metric_columns,
    pooled_keys,
    t_quantile,
)
from orchestrator.report.tables import best_metric, has, reported_latency, varying_columns

# One colour per group (plotly's and d3's qualitative palettes, repeated past 20 groups).
COLORS = [
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#ff9896",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
]
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
PARETO_FRONT = "pareto/front"
# Words in a metric name that say "higher is better"; everything else is a cost (lower wins).
HIGHER_WORDS = ("acc", "f1", "samples_per_s", "throughput", "/front")


def higher_is_better(metric: str) -> bool:
    return any(w in metric for w in HIGHER_WORDS) and "loss" not in metric


def color_map(names: list[str]) -> dict[str, str]:
    return {n: COLORS[i % len(COLORS)] for i, n in enumerate(dict.fromkeys(names))}


def fragment(fig: object, div_id: str) -> str:
    """A figure as a <div> plus its script; plotly.js itself is on the page once."""
    return fig.to_html(  # type: ignore[attr-defined]
        full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG
    )


def _num(v: object) -> float | None:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def _fmt(v: object) -> str:
    f = _num(v)
    if f is None:
        return str(v)
    if f == int(f) and abs(f) < 1e15:
        return f"{int(f):,}"
    return f"{f:.4g}"


def _plain(v: object) -> object:
    """A JSON-ready scalar (numpy types, NaN -> None)."""
    if v is None or v is pd.NA:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    return v if isinstance(v, int | float | str | bool) else str(v)


def explorer_data(view: pd.DataFrame, group_by: str | None = None) -> dict | None:
    """The trials, their searched parameters and metrics, as the explorer's script reads them."""
    acc = best_metric(view, C.VAL_ACC)
    if view.empty or acc.isna().all():
        return None
    v = view.copy()
    acc_col = C.BEST_PREFIX + C.VAL_ACC
    v[acc_col] = acc
    pooled = set(pooled_keys(group_by))
    params = [c for c in varying_columns(v) if c != C.STAGE]
    if C.STAGE in v and v[C.STAGE].nunique() > 1:
        params.insert(0, C.STAGE)
    metrics = [m for m in metric_columns(v) if m not in pooled and v[m].nunique() > 0]
    first = [acc_col, C.BEST_PREFIX + C.VAL_F1]
    metrics = [m for m in first if m in metrics] + [m for m in metrics if m not in first]
    glabels = group_labels(v, group_by)
    colors = color_map(list(glabels))
    front = v.get(PARETO_FRONT)
    trials = []
    for idx, row in v.iterrows():
        p = {c: _plain(row[c]) for c in params}
        m = {k: _num(row[k]) for k in metrics}
        hover = [f"<b>{row[C.LABEL]}</b>", f"group: {glabels[idx]}"]
        hover += [f"{k} = {_fmt(val)}" for k, val in p.items() if val is not None]
        hover += [f"{k} = {_fmt(val)}" for k, val in m.items() if val is not None]
        trials.append(
            {
                "label": str(row[C.LABEL]),
                "group": str(glabels[idx]),
                "params": p,
                "m": m,
                "front": bool(front[idx]) if front is not None and pd.notna(front[idx]) else False,
                "hover": "<br>".join(hover),
            }
        )
    # The x axis: the first cost the trials differ on, else the first searched number.
    costs = [C.GMACS, C.LATENCY_MS, C.PEAK_MEM_MB, C.EPOCH_S, C.STEP_MS_P50]
    numeric_params = [
        c for c in params if pd.to_numeric(v[c], errors="coerce").notna().all() and c not in pooled
    ]
    x_default = next((c for c in costs if c in metrics and v[c].nunique() > 1), None)
    x_default = x_default or next(iter(numeric_params), None)
    x_default = x_default or next((m for m in metrics if m != acc_col), acc_col)
    n_max = int(pd.Series(glabels).value_counts().max())
    return {
        "trials": trials,
        "metrics": [{"key": m, "higher": higher_is_better(m)} for m in metrics]
        + [{"key": p, "higher": False, "param": True} for p in numeric_params],
        "params": params,
        "colors": colors,
        "x": x_default,
        "y": acc_col,
        "logx": _spans_decades(v, x_default),
        "t": {str(n): t_quantile(n - 1) for n in range(2, n_max + 1)},
        "searchFront": front is not None,
    }


def _spans_decades(v: pd.DataFrame, col: str) -> bool:
    x = pd.to_numeric(v[col], errors="coerce") if col in v else pd.Series(dtype=float)
    return bool(x.notna().any() and x.min() > 0 and x.max() / x.min() >= 100)


def explorer(view: pd.DataFrame, uid: str, group_by: str | None = None) -> str | None:
    """The Pareto explorer and parallel coordinates of one sweep, as an HTML fragment."""
    data = explorer_data(view, group_by)
    if data is None:
        return None
    # "</" inside a JSON string would end the <script> element early.
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return EXPLORER_HTML.replace("@UID@", uid).replace("@DATA@", payload)


EXPLORER_HTML = """
<div class="explorer" id="@UID@">
<div class="controls">
<label>x <select class="ax-x"></select></label>
<label>y <select class="ax-y"></select></label>
<label>constraint <select class="c-metric"><option value="">none</option></select></label>
<select class="c-op"><option value="le">&le;</option><option value="ge">&ge;</option></select>
<input class="c-value" type="number" step="any" placeholder="value">
<label><input class="show-groups" type="checkbox" checked> group means &plusmn; 95% CI</label>
<label><input class="log-x" type="checkbox"> log x</label>
</div>
<p class="recommendation" data-role="recommendation"></p>
<div class="plot-scatter" style="height:520px"></div>
<h3>Parallel coordinates: searched parameters against the chosen y metric</h3>
<div class="plot-parcoords" style="height:420px"></div>
<script type="application/json" class="explorer-data">@DATA@</script>
</div>
<script>lvmExplorer(document.getElementById("@UID@"));</script>
"""

# Plain ES5, no library but plotly.js: it runs from a file with nothing fetched.
EXPLORER_JS = r"""
function lvmExplorer(root) {
  var D = JSON.parse(root.querySelector(".explorer-data").textContent);
  var higher = {}, isParam = {};
  D.metrics.forEach(function (m) { higher[m.key] = m.higher; isParam[m.key] = !!m.param; });
  var q = function (s) { return root.querySelector(s); };
  function fill(sel, value) {
    D.metrics.forEach(function (m) { var o = document.createElement("option");
      o.value = m.key; o.textContent = m.key; sel.appendChild(o); });
    if (value) sel.value = value;
  }
  fill(q(".ax-x"), D.x); fill(q(".ax-y"), D.y); fill(q(".c-metric"), "");
  q(".log-x").checked = !!D.logx;
  function val(t, k) { var v = (k in t.m) ? t.m[k] : t.params[k];
    return (v === null || v === undefined || typeof v !== "number") ? null : v; }
  function passes(t) {
    var k = q(".c-metric").value, lim = parseFloat(q(".c-value").value);
    if (!k || isNaN(lim)) return true;
    var v = val(t, k); if (v === null) return false;
    return q(".c-op").value === "le" ? v <= lim : v >= lim;
  }
  function better(a, b, k) { return higher[k] ? a > b : a < b; }
  function fmt(v) { return (v === null || isNaN(v)) ? "-" : Number(v.toPrecision(4)).toString(); }
  function stats(vs) {
    var n = vs.length, mean = 0, ss = 0; vs.forEach(function (v) { mean += v / n; });
    vs.forEach(function (v) { ss += (v - mean) * (v - mean); });
    var sd = n > 1 ? Math.sqrt(ss / (n - 1)) : NaN, t = D.t[String(n)];
    var half = n > 1 ? t * sd / Math.sqrt(n) : NaN;
    return {n: n, mean: mean, sd: sd, lo: mean - half, hi: mean + half, half: half};
  }
  function front(pts, x, y) {
    // No other point at least as good on both axes and better on one.
    return pts.filter(function (p) { return !pts.some(function (o) {
      var ge = !better(p.x, o.x, x) && !better(p.y, o.y, y);
      return ge && (better(o.x, p.x, x) || better(o.y, p.y, y)); }); })
      .sort(function (a, b) { return a.x - b.x; });
  }
  function draw() {
    var x = q(".ax-x").value, y = q(".ax-y").value, traces = [], byGroup = {}, order = [];
    D.trials.forEach(function (t) {
      if (!(t.group in byGroup)) { byGroup[t.group] = []; order.push(t.group); }
      byGroup[t.group].push(t);
    });
    var pts = [];
    order.forEach(function (g) {
      var ts = byGroup[g].filter(function (t) { return val(t, x) !== null && val(t, y) !== null; });
      var tr = {type: "scatter", mode: "markers", name: g, legendgroup: g, x: [], y: [], text: [],
        hovertemplate: "%{text}<extra></extra>", marker: {color: D.colors[g], size: 9, opacity: []}};
      ts.forEach(function (t) { var ok = passes(t); tr.x.push(val(t, x)); tr.y.push(val(t, y));
        tr.text.push(t.hover + (ok ? "" : "<br><i>fails the constraint</i>"));
        tr.marker.opacity.push(ok ? 0.9 : 0.2);
        if (ok) pts.push({x: val(t, x), y: val(t, y), label: t.label}); });
      traces.push(tr);
      if (q(".show-groups").checked && ts.length > 1) {
        var sx = stats(ts.map(function (t) { return val(t, x); }));
        var sy = stats(ts.map(function (t) { return val(t, y); }));
        traces.push({type: "scatter", mode: "markers", name: g + " (mean)", legendgroup: g,
          showlegend: false, x: [sx.mean], y: [sy.mean],
          error_x: {type: "data", array: [sx.half], visible: true, color: D.colors[g]},
          error_y: {type: "data", array: [sy.half], visible: true, color: D.colors[g]},
          marker: {symbol: "diamond", size: 13, color: D.colors[g], line: {color: "#000", width: 1}},
          hovertemplate: "<b>" + g + "</b> mean of n=" + sy.n + "<br>" + y + " = " + fmt(sy.mean) +
            " [" + fmt(sy.lo) + ", " + fmt(sy.hi) + "]<br>" + x + " = " + fmt(sx.mean) +
            " [" + fmt(sx.lo) + ", " + fmt(sx.hi) + "]<extra></extra>"});
      }
    });
    var f = (isParam[x] || isParam[y]) ? [] : front(pts, x, y);
    traces.push({type: "scatter", mode: "lines+markers", name: "Pareto front", x: f.map(function (p) { return p.x; }),
      y: f.map(function (p) { return p.y; }), line: {color: "crimson", dash: "dash", shape: "hv"},
      marker: {size: 16, color: "rgba(0,0,0,0)", line: {color: "crimson", width: 2}},
      text: f.map(function (p) { return p.label; }), hovertemplate: "Pareto-optimal: %{text}<extra></extra>"});
    if (D.searchFront) {
      var sf = D.trials.filter(function (t) { return t.front && val(t, x) !== null && val(t, y) !== null; });
      traces.push({type: "scatter", mode: "markers", name: "pareto/front (search)",
        x: sf.map(function (t) { return val(t, x); }), y: sf.map(function (t) { return val(t, y); }),
        marker: {symbol: "star-open", size: 18, color: "#222"}, hoverinfo: "skip"});
    }
    var shapes = [], k = q(".c-metric").value, lim = parseFloat(q(".c-value").value);
    if (k && !isNaN(lim) && (k === x || k === y)) {
      var le = q(".c-op").value === "le", s = {type: "rect", fillcolor: "rgba(120,120,120,0.18)",
        line: {width: 0}, layer: "below"};
      if (k === x) { s.xref = "x"; s.yref = "paper"; s.y0 = 0; s.y1 = 1; s.x0 = lim; s.x1 = le ? 1e300 : -1e300; }
      else { s.yref = "y"; s.xref = "paper"; s.x0 = 0; s.x1 = 1; s.y0 = lim; s.y1 = le ? 1e300 : -1e300; }
      shapes.push(s);
    }
    Plotly.react(q(".plot-scatter"), traces, {
      xaxis: {title: {text: x + (isParam[x] ? " (searched)" : higher[x] ? " (higher is better)" : " (lower is better)")},
        zeroline: false, type: q(".log-x").checked ? "log" : "linear"},
      yaxis: {title: {text: y + (higher[y] ? " (higher is better)" : " (lower is better)")}, zeroline: false},
      shapes: shapes, hovermode: "closest", legend: {itemclick: "toggle", itemdoubleclick: "toggleothers"},
      margin: {t: 20}}, {displaylogo: false, responsive: true});
    recommend(y, byGroup, order);
    parcoords(y);
  }
  function recommend(y, byGroup, order) {
    // A group meets the constraint when its mean does (a single trial: its own value).
    var best = null, groups = [], ck = q(".c-metric").value, cl = parseFloat(q(".c-value").value);
    order.forEach(function (g) {
      var ts = byGroup[g];
      if (ck && !isNaN(cl)) {
        var cv = ts.map(function (t) { return val(t, ck); }).filter(function (v) { return v !== null; });
        if (!cv.length) return;
        var cm = stats(cv).mean;
        if (q(".c-op").value === "le" ? cm > cl : cm < cl) return;
      }
      var vs = ts.map(function (t) { return val(t, y); }).filter(function (v) { return v !== null; });
      if (vs.length) { var s = stats(vs); s.name = g; s.trials = ts; groups.push(s); }
    });
    var k = q(".c-metric").value, lim = q(".c-value").value;
    var within = (k && lim !== "") ? " within " + k + (q(".c-op").value === "le" ? " <= " : " >= ") + lim : "";
    var el = q(".recommendation");
    if (!groups.length) { el.textContent = "No trial meets the constraint" + within + "."; return; }
    groups.forEach(function (s) { if (!best || better(s.mean, best.mean, y)) best = s; });
    var text;
    if (best.n > 1) {
      var tied = groups.filter(function (s) { return s !== best && !(s.hi < best.lo || s.lo > best.hi); })
        .map(function (s) { return s.name; });
      text = "Best group" + within + " by mean " + y + ": " + best.name + " at " + fmt(best.mean) +
        " (95% CI [" + fmt(best.lo) + ", " + fmt(best.hi) + "], n = " + best.n + "). " +
        (tied.length ? "Cannot be told apart from: " + tied.join(", ") + " (intervals overlap)."
                     : "No other group's interval overlaps it.");
    } else {
      var bt = null; groups.forEach(function (s) { s.trials.forEach(function (t) { var v = val(t, y);
        if (v !== null && (!bt || better(v, val(bt, y), y))) bt = t; }); });
      text = "Best trial" + within + " by " + y + ": " + bt.label + " at " + fmt(val(bt, y)) + ".";
    }
    el.textContent = text;
  }
  function parcoords(y) {
    if (!D.params.length) { q(".plot-parcoords").style.display = "none"; return; }
    var ts = D.trials.filter(function (t) { return val(t, y) !== null; });
    var dims = D.params.map(function (p) {
      var vs = ts.map(function (t) { return t.params[p]; });
      if (vs.every(function (v) { return typeof v === "number" || v === null; }))
        return {label: p, values: vs.map(function (v) { return v === null ? NaN : v; })};
      var cats = Array.from(new Set(vs.map(String))).sort();
      return {label: p, values: vs.map(function (v) { return cats.indexOf(String(v)); }),
        tickvals: cats.map(function (c, i) { return i; }), ticktext: cats};
    });
    var yv = ts.map(function (t) { return val(t, y); });
    dims.push({label: y, values: yv});
    Plotly.react(q(".plot-parcoords"), [{type: "parcoords", dimensions: dims,
      line: {color: yv, colorscale: "Viridis", showscale: true, reversescale: !higher[y]}}],
      {margin: {l: 150, r: 80, t: 50, b: 20}}, {displaylogo: false, responsive: true});
  }
  root.querySelectorAll("select, input").forEach(function (el) {
    el.addEventListener("change", draw); el.addEventListener("input", draw); });
  draw();
}
"""


def curves(epochs: pd.DataFrame, view: pd.DataFrame, uid: str, group_by: str | None) -> str | None:
    """Validation (solid) and train (dotted) curves per epoch: a column per metric, a row per
    stage; one colour per group, its trials thin, its mean thick; the legend toggles a group."""
    from plotly.subplots import make_subplots

    panels = [
        (t, tr, va)
        for t, tr, va in (
            ("loss", C.TRAIN_LOSS, C.VAL_LOSS),
            ("accuracy", C.TRAIN_ACC, C.VAL_ACC),
            ("F1 (macro)", None, C.VAL_F1),
        )
        if has(epochs, va)
    ]
    if not panels or not has(epochs, C.EPOCH, *C.KEY) or view.empty:
        return None
    names = view[[*C.KEY, C.LABEL]].assign(_group=group_labels(view, group_by).to_numpy())
    ep = epochs.drop(columns=[C.LABEL], errors="ignore").merge(names, on=list(C.KEY), how="inner")
    if ep.empty:
        return None
    ep = ep.sort_values(C.EPOCH)
    stage_col = ep[C.STAGE].astype("string").fillna("") if C.STAGE in ep else None
    stages = list(dict.fromkeys(stage_col)) if stage_col is not None else [""]
    staged = len(stages) > 1
    colors = color_map(list(names["_group"]))
    titles = [f"{s + ': ' if staged else ''}{t}" for s in stages for t, _, _ in panels]
    fig = make_subplots(
        rows=len(stages), cols=len(panels), subplot_titles=titles, vertical_spacing=0.12
    )
    shown: set[str] = set()
    for r, stage in enumerate(stages, start=1):
        part = ep[stage_col == stage] if stage_col is not None else ep
        for c, (_t, train_col, val_col) in enumerate(panels, start=1):
            for group, g in part.groupby("_group", sort=False):
                color = colors[str(group)]
                trials = list(g.groupby(C.LABEL, sort=False))
                for label, rows in trials:
                    for col, dash in ((val_col, "solid"), (train_col, "dot")):
                        if not col or not has(rows, col):
                            continue
                        fig.add_scatter(
                            x=rows[C.EPOCH].tolist(),
                            y=rows[col].astype(float).round(5).tolist(),
                            mode="lines" if len(rows) > 2 else "lines+markers",
                            line={
                                "color": color,
                                "width": 1 if len(trials) > 1 else 2,
                                "dash": dash,
                            },
                            opacity=0.35 if len(trials) > 1 else 0.9,
                            name=str(group),
                            legendgroup=str(group),
                            showlegend=False,
                            hovertemplate=f"{label}<br>epoch %{{x}}<br>{col} = %{{y:.4g}}"
                            "<extra></extra>",
                            row=r,
                            col=c,
                        )
                if len(trials) > 1 and has(g, val_col):
                    mean = g.groupby(C.EPOCH)[val_col].mean()
                    fig.add_scatter(
                        x=mean.index.tolist(),
                        y=mean.round(5).tolist(),
                        mode="lines+markers",
                        line={"color": color, "width": 3},
                        name=str(group),
                        legendgroup=str(group),
                        showlegend=str(group) not in shown,
                        hovertemplate=f"{group} (mean of {len(trials)})<br>epoch %{{x}}<br>"
                        f"{val_col} = %{{y:.4g}}<extra></extra>",
                        row=r,
                        col=c,
                    )
                    shown.add(str(group))
                elif str(group) not in shown:
                    fig.data[-1].showlegend = True
                    shown.add(str(group))
            fig.update_xaxes(title_text="epoch", dtick=1, row=r, col=c)
    fig.update_annotations(font_size=12)
    fig.update_layout(
        height=340 * len(stages) + 60,
        margin={"t": 40},
        legend={"itemclick": "toggle", "itemdoubleclick": "toggleothers"},
        hovermode="closest",
    )
    return fragment(fig, uid)


def sorted_bars(
    view: pd.DataFrame,
    col: str,
    title: str,
    uid: str,
    group_by: str | None,
    error: pd.Series | None = None,
) -> str | None:
    """One value per trial as a sorted dot chart: one row per trial, coloured by its group, or,
    where trials repeat, one row per group at its mean with the 95% interval as error bars.
    `error` (per trial, e.g. p90 - p50) is drawn as the trial's own bar."""
    import plotly.graph_objects as go

    if not has(view, col):
        return None
    glabels = group_labels(view, group_by)
    v = view[view[col].notna()].copy()
    v["_group"] = glabels[v.index]
    colors = color_map(list(glabels))
    fig = go.Figure()
    repeats = v["_group"].value_counts().max() > 1
    if repeats:
        rows = []
        for group, g in v.groupby("_group", sort=False):
            n, mean, std, lo, hi = mean_ci(g[col].astype(float))
            rows.append((str(group), n, mean, std, lo, hi))
        rows.sort(key=lambda r: r[2])
        for name, n, mean, std, lo, hi in rows:
            half = (hi - mean) if n > 1 else 0.0
            fig.add_scatter(
                y=[name],
                x=[mean],
                mode="markers",
                marker={"color": colors[name], "size": 11},
                error_x={"type": "data", "array": [half], "visible": True},
                name=name,
                legendgroup=name,
                hovertemplate=f"<b>{name}</b>, n = {n}<br>{col} mean = {_fmt(mean)}, std "
                f"{_fmt(std)}<br>95% CI [{_fmt(lo)}, {_fmt(hi)}]<extra></extra>",
            )
        order = [r[0] for r in rows]
        what = "groups of repeats at their mean, bar: 95% CI"
    else:
        v = v.sort_values(col)
        for group, g in v.groupby("_group", sort=False):
            err = None
            if error is not None:
                err = {"type": "data", "array": error[g.index].fillna(0).tolist(), "visible": True}
            fig.add_scatter(
                y=g[C.LABEL].astype(str).tolist(),
                x=g[col].astype(float).tolist(),
                mode="markers",
                marker={"color": colors[str(group)], "size": 10},
                name=str(group),
                legendgroup=str(group),
                error_x=err,
                hovertemplate="%{y}<br>" + col + " = %{x:.4g}<extra>" + str(group) + "</extra>",
            )
        order = v[C.LABEL].astype(str).tolist()
        what = "one row per trial"
    fig.update_layout(
        title={"text": f"{title} ({what})", "font": {"size": 14}},
        height=max(260, 18 * len(order) + 130),
        yaxis={
            "categoryorder": "array",
            "categoryarray": order,
            "automargin": True,
            "tickfont": {"size": 10},
            "type": "category",
        },
        xaxis={"title": {"text": col}},
        margin={"t": 40, "l": 10},
        legend={"itemclick": "toggle", "itemdoubleclick": "toggleothers"},
        showlegend=len(set(v["_group"])) <= 40,
    )
    return fragment(fig, uid)


def latency_view(
    latency: pd.DataFrame, view: pd.DataFrame, uid: str, group_by: str | None
) -> str | None:
    """Latency p50 at batch size 1: lines over input size when trials measured several sizes,
    else a sorted bar chart of the trials (error bar: the p90)."""
    import plotly.graph_objects as go

    lat = reported_latency(latency)
    if not has(lat, C.LAT_P50, C.LAT_INPUT_SIZE, *C.KEY):
        return None
    if has(lat, C.LAT_BATCH_SIZE):
        lat = lat[lat[C.LAT_BATCH_SIZE] == lat[C.LAT_BATCH_SIZE].min()]
    bs = int(lat[C.LAT_BATCH_SIZE].min()) if has(lat, C.LAT_BATCH_SIZE) else None
    if lat[C.LAT_INPUT_SIZE].nunique() < 2:
        per = lat.groupby(list(C.KEY))[C.LAT_P50].median()
        v = view.set_index(list(C.KEY)).copy()
        v = v.assign(_lat=per.reindex(v.index).to_numpy()).reset_index()
        err = None
        if C.LAT_P90 in lat:
            p90 = (
                lat.groupby(list(C.KEY))[C.LAT_P90]
                .median()
                .reindex(view.set_index(list(C.KEY)).index)
            )
            err = pd.Series(p90.to_numpy() - v["_lat"].to_numpy(), index=v.index)
        size = int(lat[C.LAT_INPUT_SIZE].iloc[0])
        return sorted_bars(
            v.rename(columns={"_lat": "latency p50 (ms)"}),
            "latency p50 (ms)",
            f"Forward latency p50 at {size} px, batch size {bs}, sorted (bar to p90)",
            uid,
            group_by,
            error=err,
        )
    names = view[[*C.KEY, C.MODEL_LABEL if C.MODEL_LABEL in view else C.LABEL]]
    lat = lat.merge(names, on=list(C.KEY), how="left")
    model_col = C.MODEL_LABEL if C.MODEL_LABEL in lat else C.LABEL
    lat[model_col] = lat[model_col].fillna(lat[C.TRIAL_ID].astype(str))
    colors = color_map(list(lat[model_col].astype(str)))
    fig = go.Figure()
    for model, g in lat.groupby(model_col, sort=False):
        m = g.groupby(C.LAT_INPUT_SIZE)[C.LAT_P50].agg(["median", "min", "max"]).sort_index()
        fig.add_scatter(
            x=m.index.tolist(),
            y=m["median"].tolist(),
            error_y={
                "type": "data",
                "array": (m["max"] - m["median"]).tolist(),
                "arrayminus": (m["median"] - m["min"]).tolist(),
                "visible": True,
            },
            mode="lines+markers",
            name=str(model),
            line={"color": colors[str(model)]},
            hovertemplate=f"{model}<br>%{{x}} px: %{{y:.4g}} ms<extra></extra>",
        )
    fig.update_layout(
        title={
            "text": f"Forward latency p50 vs input size, batch size {bs} (bars: range over "
            "trials of one model)",
            "font": {"size": 14},
        },
        xaxis={"title": {"text": "input size (pixels per side)"}},
        yaxis={"title": {"text": "latency p50 (ms)"}},
        height=440,
        legend={"itemclick": "toggle", "itemdoubleclick": "toggleothers"},
    )
    return fragment(fig, uid)


def memory_view(view: pd.DataFrame, uid: str, group_by: str | None) -> str | None:
    """Peak memory per trial (the sweep's memory figure), sorted."""
    if not has(view, C.PEAK_MEM_MB):
        return None
    from orchestrator.report.tables import peak_mem_label

    return sorted_bars(view, C.PEAK_MEM_MB, f"{peak_mem_label(view)}, sorted", uid, group_by)
