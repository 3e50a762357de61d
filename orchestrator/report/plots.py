"""The report's figures: each function returns a `Plot` (PNG bytes) or None when its data is absent.

Figures are built with matplotlib's object API (`Figure`, no pyplot state) and rendered by Agg, so
no display is needed and nothing leaks between reports. Every trial keeps one colour across all
figures (`Palette`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot: a report never needs a display

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from orchestrator.report import columns as C
from orchestrator.report.pareto import front_line, pareto_mask, search_front
from orchestrator.report.tables import (
    best_metric,
    first_present,
    has,
    peak_mem_label,
    recovered_acc,
    reported_latency,
)

DPI = 100
MAX_LEGEND = 16  # more trials than this: legend lists the first ones only
MAX_ANNOTATED = 4  # more trials than this: only Pareto-optimal points carry their label
MAX_HEATMAPS = 3
MAX_WEIGHT_LAYERS = 6


@dataclass
class Plot:
    """One rendered figure."""

    name: str  # file stem, e.g. "perf_vs_complexity"
    title: str
    png: bytes
    caption: str = ""


class Palette:
    """A fixed colour per trial label, shared by all figures of one report."""

    def __init__(self, labels: list[str]) -> None:
        cmap = matplotlib.colormaps["tab20" if len(labels) > 10 else "tab10"]
        self._colors = {label: cmap(i % cmap.N) for i, label in enumerate(labels)}

    def __call__(self, label: str) -> tuple[float, float, float, float]:
        return self._colors.get(label, (0.3, 0.3, 0.3, 1.0))


def _render(fig: Figure) -> bytes:
    buf = io.BytesIO()
    # constrained layout already fits labels and the outside legend; "tight" would draw twice
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def _figure(ncols: int, nrows: int = 1, *, width: float = 4.6, height: float = 3.6) -> tuple:
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, list(axes.flat)


def _legend(fig: Figure, axes: list[Axes]) -> None:
    handles, labels, seen = [], [], set()
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in seen and not lab.startswith("_"):
                seen.add(lab)
                handles.append(h)
                labels.append(lab)
    if not handles:
        return
    extra = len(handles) - MAX_LEGEND
    handles, labels = handles[:MAX_LEGEND], labels[:MAX_LEGEND]
    if extra > 0:
        labels[-1] += f" (+{extra} more)"
    # As many columns as fit the figure's width (about 5.5 px per character at fontsize 8).
    width_px = fig.get_figwidth() * DPI
    col_px = 5.5 * max(len(lab) for lab in labels) + 40
    ncols = max(1, min(4, len(handles), int(width_px // col_px)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8)


def _drop_unused(fig: Figure, axes: list[Axes], used: int) -> None:
    for ax in axes[used:]:
        fig.delaxes(ax)


def perf_vs_complexity(view: pd.DataFrame, palette: Palette) -> Plot | None:
    """val/acc against GMACs, latency and peak memory, the Pareto front drawn and ringed."""
    acc = best_metric(view, C.VAL_ACC)
    axes_spec = [
        (C.GMACS, "forward GMACs (per sample)"),
        (C.LATENCY_MS, "latency p50, batch size 1 (ms)"),
        (C.PEAK_MEM_MB, peak_mem_label(view)),
    ]
    axes_spec = [(col, xl) for col, xl in axes_spec if has(view, col)]
    if acc.isna().all() or not axes_spec:
        return None
    fig, axes = _figure(len(axes_spec))
    for ax, (col, xlabel) in zip(axes, axes_spec, strict=True):
        cost = view[col].astype(float)
        front = pareto_mask(cost, acc)
        # Alternate label heights along the cost axis so neighbours' labels do not overprint.
        order = {idx: i for i, idx in enumerate(cost.dropna().sort_values().index)}
        for idx in view.index:
            if pd.isna(cost[idx]) or pd.isna(acc[idx]):
                continue
            label = view.at[idx, C.LABEL]
            ax.scatter(cost[idx], acc[idx], color=palette(label), s=50, zorder=3, label=label)
            if front[idx]:
                ax.scatter(
                    cost[idx],
                    acc[idx],
                    s=160,
                    facecolors="none",
                    edgecolors="crimson",
                    linewidths=1.6,
                    zorder=4,
                )
            if front[idx] or len(view) <= MAX_ANNOTATED:  # labels of all points would overlap
                dy = 4 if order[idx] % 2 == 0 else -11
                _annotate(ax, label, float(cost[idx]), float(acc[idx]), cost, dy)
        searched = search_front(view)
        if searched is not None:
            on = searched & cost.notna() & acc.notna()
            ax.scatter(cost[on], acc[on], marker="*", s=90, color="black", zorder=5, label="_pf")
        xs, ys = front_line(cost, acc)
        ax.step(xs, ys, where="post", color="crimson", lw=1.2, ls="--", label="_front", zorder=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("best val/acc")
        ax.grid(alpha=0.3)
    fig.suptitle("Accuracy vs cost (red rings: Pareto-optimal)")
    _legend(fig, axes)
    return Plot(
        "perf_vs_complexity",
        "Performance vs complexity",
        _render(fig),
        "Each point is a trial; a ringed point has no other trial both cheaper and more "
        "accurate. The dashed line is the Pareto front. A black star marks the front of the "
        "sweep's own search.objectives (`pareto/front`).",
    )


def _annotate(ax: Axes, text: str, x: float, y: float, xs: pd.Series, dy: float) -> None:
    """Label a point, on its left when it sits in the right half so the text stays inside."""
    lo, hi = float(xs.min()), float(xs.max())
    right_half = hi > lo and (x - lo) / (hi - lo) > 0.5
    ax.annotate(
        text,
        (x, y),
        fontsize=7,
        xytext=(-6 if right_half else 6, dy),
        textcoords="offset points",
        ha="right" if right_half else "left",
        annotation_clip=True,
        clip_on=True,
    )


def latency_vs_input(
    latency: pd.DataFrame,
    view: pd.DataFrame,
    palette: Palette,
    flops: pd.DataFrame | None = None,
) -> Plot | None:
    """Forward latency (p50, band to p90) against input size per model; throughput vs batch
    size; forward GMACs vs input size when the `flops` table has several sizes."""
    latency = reported_latency(latency)
    if not has(latency, C.LAT_P50, C.LAT_INPUT_SIZE, *C.KEY):
        return None
    names = (
        view[[*C.KEY, C.LABEL, C.MODEL_LABEL]]
        if C.MODEL_LABEL in view
        else view[[*C.KEY, C.LABEL]].assign(**{C.MODEL_LABEL: view[C.LABEL]})
    )
    lat = latency.merge(names, on=list(C.KEY), how="left")
    lat[C.LABEL] = lat[C.LABEL].fillna(lat[C.TRIAL_ID].astype(str))
    # "Per model": trials that share an architecture (an lr sweep) share one line.
    lat[C.MODEL_LABEL] = lat[C.MODEL_LABEL].fillna(lat[C.LABEL])
    color_of = {m: palette(g[C.LABEL].iloc[0]) for m, g in lat.groupby(C.MODEL_LABEL, sort=False)}
    has_bs = has(lat, C.LAT_BATCH_SIZE)
    several_prec = has(lat, C.LAT_PRECISION) and lat[C.LAT_PRECISION].nunique() > 1
    throughput = has_bs and lat[C.LAT_BATCH_SIZE].nunique() > 1
    macs = _flops_by_size(flops, names)
    fig, axes = _figure(1 + int(throughput) + int(macs is not None))
    bs1 = lat[lat[C.LAT_BATCH_SIZE] == lat[C.LAT_BATCH_SIZE].min()] if has_bs else lat
    groups = [C.MODEL_LABEL, C.LAT_PRECISION] if several_prec else [C.MODEL_LABEL]
    for key, rows in bs1.groupby(groups, sort=False):
        model = key[0] if isinstance(key, tuple) else key
        name = f"{model} ({key[1]})" if several_prec else model
        rows = rows.groupby(C.LAT_INPUT_SIZE).median(numeric_only=True).sort_index()
        ax = axes[0]
        ax.plot(rows.index, rows[C.LAT_P50], "o-", color=color_of[model], label=name)
        if C.LAT_P90 in rows:
            ax.fill_between(
                rows.index, rows[C.LAT_P50], rows[C.LAT_P90], color=color_of[model], alpha=0.15
            )
    bs_text = f"batch size {int(bs1[C.LAT_BATCH_SIZE].min())}" if has_bs else "all batch sizes"
    axes[0].set_xlabel("input size (pixels per side)")
    axes[0].set_ylabel(f"forward latency p50 (ms), {bs_text}")
    axes[0].set_title("Latency vs input size (band: p50 to p90)", fontsize=10)
    axes[0].grid(alpha=0.3)
    if throughput:
        _throughput_panel(axes[1], lat, color_of)
    if macs is not None:
        _macs_panel(axes[-1], macs, color_of)
    _legend(fig, axes)
    return Plot(
        "latency_vs_input",
        "Forward latency vs input size",
        _render(fig),
        "Median forward latency per input size and model (trials that differ only in how "
        "they train share a line), measured after warm-up with the device synchronized; "
        "the shaded band reaches the 90th percentile.",
    )


def _flops_by_size(flops: pd.DataFrame | None, names: pd.DataFrame) -> pd.DataFrame | None:
    """Untagged `flops` rows with model labels, when they cover more than one input size."""
    if flops is None or not has(flops, C.F_INPUT_SIZE, C.F_GMACS, *C.KEY):
        return None
    rows = flops[flops[C.F_GMACS].notna()]
    if C.LAT_TAG in rows:
        rows = rows[rows[C.LAT_TAG].isna() | (rows[C.LAT_TAG].astype("string") == "")]
    if rows[C.F_INPUT_SIZE].nunique() < 2:
        return None
    rows = rows.merge(names, on=list(C.KEY), how="left")
    rows[C.MODEL_LABEL] = rows[C.MODEL_LABEL].fillna(rows[C.TRIAL_ID].astype(str))
    return rows


def _macs_panel(ax: Axes, rows: pd.DataFrame, color_of: dict) -> None:
    for model, g in rows.groupby(C.MODEL_LABEL, sort=False):
        g = g.groupby(C.F_INPUT_SIZE)[C.F_GMACS].median().sort_index()
        ax.plot(g.index, g.to_numpy(), "s--", color=color_of.get(model, "tab:gray"), label=model)
    ax.set_xlabel("input size (pixels per side)")
    ax.set_ylabel("forward GMACs per sample")
    ax.set_title("Compute vs input size", fontsize=10)
    ax.grid(alpha=0.3)


def _throughput_panel(ax: Axes, lat: pd.DataFrame, color_of: dict) -> None:
    size = lat[C.LAT_INPUT_SIZE].max()
    rows = lat[lat[C.LAT_INPUT_SIZE] == size]
    tp = C.LAT_THROUGHPUT if has(rows, C.LAT_THROUGHPUT) else None
    for model, g in rows.groupby(C.MODEL_LABEL, sort=False):
        g = g.groupby(C.LAT_BATCH_SIZE).median(numeric_only=True).sort_index()
        y = g[tp] if tp else 1000.0 * g.index.to_numpy() / g[C.LAT_P50]
        ax.plot(g.index, y, "o-", color=color_of[model], label=model)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title(f"Throughput vs batch size at {int(size)} px", fontsize=10)
    ax.grid(alpha=0.3)


HATCHES = ("", "//", "..", "\\\\", "xx", "oo")


def memory(view: pd.DataFrame, palette: Palette) -> Plot | None:
    """GPU memory allocated vs reserved per trial and region (CPU RSS where there is no GPU)."""
    gpu = [(c, n) for c, n in C.GPU_MEM_BARS if has(view, c)]
    cpu = [(c, n) for c, n in C.CPU_MEM_BARS if has(view, c)]
    if gpu:
        series, title = gpu, "Peak GPU memory: allocated vs reserved"
    elif cpu:
        series, title = cpu, "Peak CPU memory (RSS; no GPU figures in these trials)"
    else:
        return None
    rows = view.dropna(subset=[c for c, _ in series], how="all")
    fig, axes = _figure(1, width=max(6.0, (0.35 * len(series) + 0.4) * len(rows) + 3))
    ax = axes[0]
    x = np.arange(len(rows))
    width = 0.8 / len(series)
    colors = [palette(label) for label in rows[C.LABEL]]
    for i, (col, _name) in enumerate(series):
        bars = ax.bar(
            x + (i - (len(series) - 1) / 2) * width,
            rows[col].astype(float),
            width,
            color=colors,
            alpha=1.0 - 0.12 * i,
            edgecolor="black",
            hatch=HATCHES[i % len(HATCHES)],
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(x, rows[C.LABEL], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("MiB")
    top = float(np.nanmax(rows[[c for c, _ in series]].to_numpy(float)))
    ax.set_ylim(0, 1.2 * top if top > 0 else 1)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        proxies = [
            Patch(facecolor="white", edgecolor="black", hatch=HATCHES[i % len(HATCHES)], label=n)
            for i, (_c, n) in enumerate(series)
        ]
        ax.legend(handles=proxies, fontsize=7, loc="upper left", ncols=min(3, len(series)))
    ax.grid(alpha=0.3, axis="y")
    return Plot(
        "memory",
        "Memory per trial",
        _render(fig),
        "Peak memory per region (training epoch, evaluation, batch-1 inference), the peak over "
        "the trial's epochs. On a GPU, reserved minus allocated is what PyTorch's caching "
        "allocator holds without using it.",
    )


CURVES = (
    ("loss", C.TRAIN_LOSS, C.VAL_LOSS),
    ("accuracy", C.TRAIN_ACC, C.VAL_ACC),
    ("F1 (macro)", None, C.VAL_F1),
)


def curves(epochs: pd.DataFrame, view: pd.DataFrame, palette: Palette) -> Plot | None:
    """Train (dashed) and validation (solid) loss, accuracy and F1 per epoch, one colour a trial."""
    panels = [p for p in CURVES if any(has(epochs, c) for c in p[1:] if c)]
    if not panels or not has(epochs, C.EPOCH, *C.KEY):
        return None
    ep = epochs.merge(view[[*C.KEY, C.LABEL]], on=list(C.KEY), how="left")
    ep[C.LABEL] = ep[C.LABEL].fillna(ep[C.TRIAL_ID].astype(str))
    fig, axes = _figure(len(panels))
    for ax, (title, train_col, val_col) in zip(axes, panels, strict=True):
        for label, rows in ep.sort_values(C.EPOCH).groupby(C.LABEL, sort=False):
            color = palette(label)
            if train_col and has(rows, train_col):
                ax.plot(
                    rows[C.EPOCH],
                    rows[train_col],
                    "--",
                    marker=".",
                    color=color,
                    alpha=0.8,
                    label="_train",
                )
            if has(rows, val_col):
                ax.plot(
                    rows[C.EPOCH], rows[val_col], "-", marker="o", ms=4, color=color, label=label
                )
        ax.set_title(
            title + (" (dashed: train, solid: val)" if train_col else " (val)"), fontsize=10
        )
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, axes)
    return Plot(
        "curves",
        "Training curves",
        _render(fig),
        "Per-epoch train and validation metrics of every trial.",
    )


def lora(view: pd.DataFrame, palette: Palette) -> Plot | None:
    """LoRA rank against trainable share, step time, memory and accuracy (rank 0 = full FT)."""
    if not has(view, C.LORA_RANK) or view[C.LORA_RANK].nunique() < 2:
        return None
    rows = view[view[C.LORA_RANK].notna()].copy()
    rows["_acc"] = best_metric(rows, C.VAL_ACC)
    specs = [
        (C.TRAINABLE_PCT, "trainable parameters (%)"),
        (C.STEP_MS_P50, "training step time p50 (ms)"),
        (C.PEAK_MEM_MB, peak_mem_label(rows)),
        ("_acc", "best val/acc"),
    ]
    specs = [(c, yl) for c, yl in specs if has(rows, c)]
    if not specs:
        return None
    ncols = min(2, len(specs))
    fig, axes = _figure(ncols, (len(specs) + 1) // 2, width=5.0, height=3.3)
    groups = rows.groupby(C.MODEL_NAME, sort=False) if C.MODEL_NAME in rows else [("", rows)]
    groups = list(groups)
    for ax, (col, ylabel) in zip(axes, specs, strict=False):
        for model, g in groups:
            g = g.sort_values(C.LORA_RANK)
            color = palette(g[C.LABEL].iloc[0]) if len(groups) > 1 else "tab:blue"
            ax.plot(g[C.LORA_RANK], g[col], "o-", color=color, label=str(model) or "_")
        ax.set_xscale("symlog", base=2, linthresh=1)
        ranks = sorted(rows[C.LORA_RANK].dropna().astype(int).unique())
        ax.set_xticks(ranks, [str(r) for r in ranks])
        ax.set_xlabel("LoRA rank (0 = full fine-tune)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    _drop_unused(fig, axes, len(specs))
    fig.suptitle("LoRA rank trade-offs")
    if len(groups) > 1:
        _legend(fig, axes[: len(specs)])
    return Plot(
        "lora",
        "LoRA rank",
        _render(fig),
        "Rank 0 is the full fine-tune baseline. Trainable share grows linearly with rank; "
        "step time and memory show what the adapters cost or save.",
    )


def pruning(view: pd.DataFrame, palette: Palette) -> Plot | None:
    """Pruning ratio against accuracy (after pruning, after recovery), MACs and latency."""
    if not has(view, C.PRUNE_RATIO) or view[C.PRUNE_RATIO].nunique() < 2:
        return None
    rows = view[view[C.PRUNE_RATIO].notna()].copy()
    rows["_recovered"] = recovered_acc(rows)
    pruned_col = first_present(rows, C.PRUNED_ACC)
    dense_col = first_present(rows, C.DENSE_ACC)
    specs = [("_acc", "val/acc"), (C.GMACS, "forward GMACs"), (C.LATENCY_MS, "latency p50 (ms)")]
    specs = [(c, yl) for c, yl in specs if c == "_acc" or has(rows, c)]
    fig, axes = _figure(len(specs))
    method = (
        rows[C.PRUNE_METHOD].fillna("") if C.PRUNE_METHOD in rows else pd.Series("", rows.index)
    )
    names = sorted(method.unique())
    markers = dict(zip(names, "osD^v", strict=False))
    colors = dict(
        zip(names, ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown"), strict=False)
    )
    # The dense model's figure, where the trials recorded it: what pruning is measured against.
    dense_of = {
        "_acc": dense_col,
        C.GMACS: C.DENSE_PREFIX + C.GMACS,
        C.LATENCY_MS: first_present(rows, tuple(C.DENSE_PREFIX + c for c in C.TRIAL_LATENCY_MS)),
    }
    for ax, (col, ylabel) in zip(axes, specs, strict=True):
        dense = dense_of.get(col)
        if dense and has(rows, dense):
            ax.axhline(float(rows[dense].median()), color="gray", ls="--", lw=1, label="dense")
        for name, g in rows.groupby(method, sort=True):
            g = g.sort_values(C.PRUNE_RATIO)
            tag = f"{name} " if name else ""
            kw = dict(marker=markers[name], color=colors[name])
            if col == "_acc":
                ax.plot(g[C.PRUNE_RATIO], g["_recovered"], "-", label=f"{tag}recovered", **kw)
                if pruned_col:
                    ax.plot(
                        g[C.PRUNE_RATIO],
                        g[pruned_col],
                        ":",
                        mfc="none",
                        label=f"{tag}pruned, before recovery",
                        **kw,
                    )
            else:
                ax.plot(g[C.PRUNE_RATIO], g[col], "-", label=f"{tag}".strip() or "_", **kw)
        ax.set_xlabel("pruning ratio")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("Pruning ratio trade-offs")
    _legend(fig, axes)
    return Plot(
        "pruning",
        "Pruning ratio",
        _render(fig),
        "Accuracy right after pruning (dotted) and after recovery fine-tuning (solid); "
        "MACs and latency as counted and timed on the pruned model; the dashed grey line is "
        "the dense model.",
    )


def sensitivity(sens: pd.DataFrame, view: pd.DataFrame) -> Plot | None:
    """Heatmap layer x ratio of the accuracy drop when only that layer is pruned."""
    value = C.SENS_DROP if has(sens, C.SENS_DROP) else first_present(sens, C.SENS_ACC)
    if value is None or not has(sens, C.SENS_LAYER, C.SENS_RATIO, value):
        return None
    s = sens.copy()
    if all(k in s for k in C.KEY) and not view.empty:
        s = s.merge(view[[*C.KEY, C.LABEL]], on=list(C.KEY), how="left")
    else:
        s[C.LABEL] = ""
    s[C.LABEL] = s[C.LABEL].fillna(s.get(C.TRIAL_ID, pd.Series("", s.index)).astype(str))
    if has(s, C.SENS_METHOD) and s.groupby(C.LABEL)[C.SENS_METHOD].nunique().max() > 1:
        s[C.LABEL] = s[C.LABEL] + " (" + s[C.SENS_METHOD].astype(str) + ")"
    labels = list(s[C.LABEL].drop_duplicates())[:MAX_HEATMAPS]
    n_layers = s[C.SENS_LAYER].nunique()
    fig, axes = _figure(len(labels), width=5.5, height=max(3.0, 0.28 * n_layers + 1.5))
    cmap = "Reds" if value == C.SENS_DROP else "viridis"
    for ax, label in zip(axes, labels, strict=True):
        grid = s[s[C.LABEL] == label].pivot_table(
            index=C.SENS_LAYER, columns=C.SENS_RATIO, values=value, aggfunc="mean", sort=False
        )
        im = ax.imshow(grid.to_numpy(dtype=float), aspect="auto", cmap=cmap)
        ax.set_xticks(range(grid.shape[1]), [f"{r:g}" for r in grid.columns])
        ax.set_yticks(range(grid.shape[0]), grid.index, fontsize=7)
        ax.set_xlabel("pruning ratio of this layer alone")
        ax.set_title(label, fontsize=9)
        if grid.size <= 120:
            values = grid.to_numpy(dtype=float)
            mid = np.nanmin(values) + 0.6 * (np.nanmax(values) - np.nanmin(values))
            for (i, j), v in np.ndenumerate(values):
                if not np.isnan(v):
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if (v > mid) == (value == C.SENS_DROP) else "black",
                    )
        fig.colorbar(im, ax=ax, label="accuracy drop" if value == C.SENS_DROP else "val/acc")
    fig.suptitle("Per-layer pruning sensitivity")
    return Plot(
        "sensitivity",
        "Pruning sensitivity (layer x ratio)",
        _render(fig),
        "Each cell prunes one layer alone at one ratio and evaluates; a dark cell is a "
        "layer that should be pruned less.",
    )


PHASE_STYLE = {
    "before": ("tab:gray", "-"),
    "pruned": ("tab:red", "--"),
    "recovered": ("tab:green", "-"),
}


def weights(weights_df: pd.DataFrame, view: pd.DataFrame) -> Plot | None:
    """Weight histograms per layer before pruning, after pruning and after recovery."""
    need = (C.W_LAYER, C.W_PHASE, C.W_BIN_LEFT, C.W_BIN_RIGHT, C.W_COUNT)
    if not has(weights_df, *need):
        return None
    w = weights_df
    title_bits = ""
    if C.TRIAL_ID in w:
        # One trial's layers: the first trial that recorded more than one phase.
        phases = w.groupby(C.TRIAL_ID)[C.W_PHASE].nunique().sort_values(ascending=False)
        trial = phases.index[0]
        w = w[w[C.TRIAL_ID] == trial]
        match = view[view[C.TRIAL_ID] == trial] if C.TRIAL_ID in view else view.iloc[:0]
        title_bits = f" - {match[C.LABEL].iloc[0] if len(match) else trial}"
    layers = list(w[C.W_LAYER].drop_duplicates())[:MAX_WEIGHT_LAYERS]
    ncols = min(3, len(layers))
    fig, axes = _figure(ncols, (len(layers) + ncols - 1) // ncols, width=4.2, height=2.9)
    order = {p: i for i, p in enumerate(C.W_PHASES)}
    for ax, layer in zip(axes, layers, strict=False):
        rows = w[w[C.W_LAYER] == layer]
        for phase in sorted(rows[C.W_PHASE].unique(), key=lambda p: order.get(p, 99)):
            h = rows[rows[C.W_PHASE] == phase].sort_values(C.W_BIN_LEFT)
            edges = np.append(h[C.W_BIN_LEFT].to_numpy(float), h[C.W_BIN_RIGHT].to_numpy(float)[-1])
            color, ls = PHASE_STYLE.get(phase, ("tab:blue", "-"))
            ax.stairs(h[C.W_COUNT].to_numpy(float), edges, color=color, ls=ls, lw=1.3, label=phase)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_title(str(layer), fontsize=8)
        ax.set_xlabel("weight value", fontsize=8)
        ax.tick_params(labelsize=7)
    _drop_unused(fig, axes, len(layers))
    fig.suptitle("Weight distributions" + title_bits)
    _legend(fig, axes[: len(layers)])
    return Plot(
        "weights",
        "Weight distributions",
        _render(fig),
        "Histogram of each layer's weights (log count) before pruning, right after it and "
        "after recovery fine-tuning; the same bins in every phase, so the bins pruning "
        "emptied and the shift recovery made show directly.",
    )


FAMILY_CURVES = (("accuracy", C.VAL_ACC), ("F1 (macro)", C.VAL_F1), ("test loss", C.VAL_LOSS))


def _families(view: pd.DataFrame) -> pd.Series | None:
    """Each trial's model family (ViT, BiT, Hybrid, ...), from `model.name`."""
    if not has(view, C.MODEL_NAME):
        return None
    from trainables.models.names import family

    return view[C.MODEL_NAME].astype(str).map(family)


def family_curves(epochs: pd.DataFrame | None, view: pd.DataFrame, palette: Palette) -> Plot | None:
    """Seed 003's figures: validation accuracy, F1 and loss per epoch, one column per model family
    (ViT, BiT, Hybrid, ...), one line per trial; only for sweeps with two families or more."""
    fams = _families(view)
    if epochs is None or fams is None or fams.nunique() < 2 or not has(epochs, C.EPOCH, *C.KEY):
        return None
    rows_ = [(t, c) for t, c in FAMILY_CURVES if has(epochs, c)]
    if not rows_:
        return None
    names = view[[*C.KEY, C.LABEL]].assign(_family=fams.to_numpy())
    ep = epochs.merge(names, on=list(C.KEY), how="inner").sort_values(C.EPOCH)
    order = sorted(ep["_family"].unique())
    fig, axes = _figure(len(order), len(rows_), width=3.6, height=2.8)
    grid = np.array(axes).reshape(len(rows_), len(order))
    for r, (title, col) in enumerate(rows_):
        for c, fam in enumerate(order):
            ax = grid[r, c]
            for label, rows in ep[ep["_family"] == fam].groupby(C.LABEL, sort=False):
                ax.plot(
                    rows[C.EPOCH],
                    rows[col],
                    "-",
                    marker="o",
                    ms=3,
                    color=palette(label),
                    label=label,
                )
            ax.set_title(f"{fam}: {title}", fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.grid(alpha=0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(fig, list(grid.ravel()))
    return Plot(
        "family_curves",
        "Accuracy, F1 and test loss per model family",
        _render(fig),
        "Validation accuracy, macro F1 and validation (test) loss per epoch, one column per "
        "model family, one line per trial (seed 003's comparison of ViT, BiT and hybrids).",
    )


def memory_by_size(view: pd.DataFrame, palette: Palette) -> Plot | None:
    """Peak training memory per model, one panel per input size (GPU allocated, else CPU RSS)."""
    if not has(view, C.IMG_SIZE) or view[C.IMG_SIZE].nunique() < 1:
        return None
    col = (
        C.GPU_ALLOC_MB
        if has(view, C.GPU_ALLOC_MB)
        else (C.CPU_RSS_MB if has(view, C.CPU_RSS_MB) else None)
    )
    if col is None:
        return None
    rows = view.dropna(subset=[col])
    if rows.empty or view[C.IMG_SIZE].nunique() < 2:
        return None
    sizes = sorted(rows[C.IMG_SIZE].unique())
    fig, axes = _figure(
        len(sizes), width=max(3.6, 0.6 * rows.groupby(C.IMG_SIZE).size().max() + 1.6)
    )
    for ax, size in zip(axes, sizes, strict=True):
        part = rows[rows[C.IMG_SIZE] == size]
        x = np.arange(len(part))
        bars = ax.bar(
            x,
            part[col].astype(float),
            color=[palette(lb) for lb in part[C.LABEL]],
            edgecolor="black",
        )
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(x, part[C.LABEL], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"{size}x{size} px", fontsize=10)
        ax.set_ylabel("MiB")
        ax.grid(alpha=0.3, axis="y")
    what = "GPU memory allocated" if col == C.GPU_ALLOC_MB else "CPU RSS (no GPU figures)"
    return Plot(
        "memory_by_size",
        "Peak memory per model, by input size",
        _render(fig),
        f"Peak training {what} per model, one panel per input size (seed 003's GPU memory figure).",
    )
