"""Load the Parquet tables under a results directory and fold them into one row per trial.

`load_tables(dir)` finds `<dir>/<table>/` (one sweep's output, or several sweeps written to the
same output) and also `<dir>/*/<table>/` (a folder that holds several outputs), reads every part
file on its own and concatenates them: trials of different kinds carry different columns, and
reading the directory as one dataset would keep only the first part's schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import pandas as pd
import pyarrow.parquet as pq

from orchestrator.report import columns as C


@dataclass
class Tables:
    """The tables found under one results directory; an absent table is an empty frame."""

    root: Path
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    sources: dict[str, list[Path]] = field(default_factory=dict)

    def get(self, name: str) -> pd.DataFrame:
        return self.frames.get(name, pd.DataFrame())

    @property
    def empty(self) -> bool:
        return all(df.empty for df in self.frames.values())


def _part_files(table_dir: Path) -> list[Path]:
    # Skip in-flight files of the atomic writer (tmp + rename) and Spark/Arrow markers.
    return sorted(
        p
        for p in table_dir.rglob("*.parquet")
        if p.is_file() and not p.name.startswith((".", "_")) and ".tmp" not in p.name
    )


def _read_part(path: Path, table_dir: Path) -> pd.DataFrame:
    df = pq.read_table(path).to_pandas()
    # Hive-style folders (`sweep=x/`) carry a column that the file itself may lack.
    for part in path.relative_to(table_dir).parts[:-1]:
        key, sep, value = part.partition("=")
        if sep and key not in df.columns:
            df[key] = value
    return df


def table_dirs(root: Path, name: str) -> list[Path]:
    """`<root>/<name>` and `<root>/*/<name>`, the ones that exist, in a stable order."""
    found = [root / name, *sorted(root.glob(f"*/{name}"))]
    return [d for d in found if d.is_dir()]


def load_tables(root: str | Path) -> Tables:
    """Read every known table under `root`; raise if `root` is not a directory."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"results directory {str(root)!r} does not exist")
    tables = Tables(root=root)
    for name in C.TABLES:
        parts: list[pd.DataFrame] = []
        files: list[Path] = []
        for table_dir in table_dirs(root, name):
            for path in _part_files(table_dir):
                df = _read_part(path, table_dir)
                if not df.empty:
                    parts.append(df)
                    files.append(path)
        tables.frames[name] = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
        tables.sources[name] = files
    return tables


def has(df: pd.DataFrame, *cols: str) -> bool:
    """True when every column exists and holds at least one value."""
    return not df.empty and all(c in df.columns and df[c].notna().any() for c in cols)


def first_present(df: pd.DataFrame, candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if has(df, c)), None)


def config_columns(df: pd.DataFrame) -> list[str]:
    """The trial's config as stored: dotted keys (`optim.lr`) and a few top-level ones."""
    return [
        c
        for c in df.columns
        if ("." in c and "/" not in c) or (c in C.CONFIG_TOP_LEVEL and c != C.STAGE)
    ]


def varying_columns(df: pd.DataFrame) -> list[str]:
    """Config columns whose value differs between the rows of `df` (what a sweep searched).

    Never a column that holds a file path (a checkpoint to start from, a data root) nor where a
    stage started (`start.*`): they differ per trial without being what the user varied.
    """
    out = []
    for c in config_columns(df):
        if c.startswith(C.START_PREFIX) or df[c].map(_is_path).any():
            continue
        values = df[c].map(lambda v: repr(v) if isinstance(v, list | dict) else v)
        if values.nunique(dropna=False) > 1:
            out.append(c)
    return out


def _is_path(value: object) -> bool:
    """A file-system path as the config stores one (made absolute, or written relative)."""
    if not isinstance(value, str):
        return False
    return (
        PurePosixPath(value).is_absolute()
        or PureWindowsPath(value).is_absolute()
        or value.startswith(("~", "./", "../", ".\\", "..\\"))
    )


def _short(col: str) -> str:
    return col.rsplit(".", 1)[-1]


def _fmt_value(v: object) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _config_bits(col: str, value: object) -> list[str]:
    """`lr=0.001`; a JSON dict (e.g. `model.kwargs`) as its items, an empty one as nothing."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return [f"{k}={_fmt_value(v)}" for k, v in parsed.items()]
        if isinstance(parsed, list):
            return [f"{_short(col)}={','.join(_fmt_value(v) for v in parsed)}"]
    return [f"{_short(col)}={_fmt_value(value)}"]


def _labels(
    trials: pd.DataFrame, prefixes: tuple[str, ...] | None = None, *, unique: bool = True
) -> pd.Series:
    """A short human name per trial: model name plus the config values its sweep varied.

    With `prefixes`, only varied config keys under those prefixes count (e.g. the ones that
    change the network, not the optimizer). Names are unique within a sweep unless `prefixes`
    is given, where trials that share an architecture share a name on purpose, or `unique` is
    False (repeats of one config share it: the name of their group).
    """
    labels = pd.Series("", index=trials.index, dtype=object)
    groups = trials.groupby(C.SWEEP, sort=False) if C.SWEEP in trials else [(None, trials)]
    for _sweep, group in groups:
        staged = C.STAGE in group and group[C.STAGE].nunique() > 1
        # A stage's own keys (trainable, epochs, ...) differ from the other stage's without being
        # searched: what varies is read within each stage.
        parts = group.groupby(C.STAGE, sort=False, dropna=False) if staged else [(None, group)]
        for stage, part in parts:
            vary = [c for c in varying_columns(part) if c != C.MODEL_NAME]
            if prefixes is not None:
                vary = [c for c in vary if c.startswith(prefixes)]
            for idx, row in part.iterrows():
                bits = []
                if C.MODEL_NAME in part and pd.notna(row[C.MODEL_NAME]):
                    bits.append(str(row[C.MODEL_NAME]))
                for c in vary:
                    if pd.notna(row[c]):
                        bits += _config_bits(c, row[c])
                if staged and pd.notna(stage):
                    bits.append(f"[{stage}]")
                labels[idx] = " ".join(bits) or str(row[C.TRIAL_ID])
    if prefixes is None and unique:
        # Two trials with the same config (seeds, repeats) still need distinct names.
        keys = [trials[C.SWEEP], labels] if C.SWEEP in trials else [labels]
        dup = pd.DataFrame({i: k for i, k in enumerate(keys)}).duplicated(keep=False)
        if dup.any():
            labels[dup] = labels[dup] + " #" + trials.loc[dup, C.TRIAL_ID].astype(str).str[-6:]
    return labels


def _from_epochs(epochs: pd.DataFrame) -> pd.DataFrame:
    """One row per trial out of its epoch rows: final values, best and peak metrics."""
    ordered = epochs.sort_values([*C.KEY, C.EPOCH]) if C.EPOCH in epochs else epochs
    grouped = ordered.groupby(list(C.KEY), sort=False, dropna=False)
    # The final row as it is (groupby.last would skip nulls column by column).
    out = grouped.tail(1).set_index(list(C.KEY))
    out[C.N_EPOCHS] = grouped.size()
    for metric, higher in C.HIGHER_IS_BETTER.items():
        if metric in ordered:
            best = grouped[metric].max() if higher else grouped[metric].min()
            out[C.BEST_PREFIX + metric] = best
    for metric in ordered.columns:
        if metric.startswith(C.MEM_PREFIX) and metric.endswith(C.MEM_SUFFIX):
            out[metric] = (
                pd.to_numeric(ordered[metric], errors="coerce")
                .groupby([ordered[k] for k in C.KEY], sort=False)
                .max()
            )
    return out.reset_index()


def trial_view(tables: Tables) -> pd.DataFrame:
    """One row per trial: the `trials` table where it exists, completed from `epochs`.

    Values from `trials` win; a column only `epochs` has (or a trial only `epochs` knows) is
    filled from the epoch rows, except memory (`mem/*_mb`): the peak over the epoch rows wins.
    Adds `label`, `model label`, `epochs` (count), and the cost figures the report plots:
    `latency_ms_p50 (bs 1)` and `peak memory (MiB)` (with its source column).
    """
    trials = tables.get(C.TRIALS)
    epochs = tables.get(C.EPOCHS)
    parts = []
    if not trials.empty and all(k in trials for k in C.KEY):
        parts.append(trials.drop_duplicates(list(C.KEY), keep="last").set_index(list(C.KEY)))
    from_epochs = None
    if not epochs.empty and all(k in epochs for k in C.KEY):
        from_epochs = _from_epochs(epochs).set_index(list(C.KEY))
        parts.append(from_epochs)
    if not parts:
        return pd.DataFrame()
    view = parts[0]
    for extra in parts[1:]:
        view = view.combine_first(extra)
    if from_epochs is not None:
        # `trials` keeps the final epoch's memory; the report promises the peak over epochs.
        for col in from_epochs.columns:
            if col.startswith(C.MEM_PREFIX) and col.endswith(C.MEM_SUFFIX):
                view[col] = from_epochs[col].reindex(view.index).fillna(view[col])
    view = view.reset_index().copy()  # combine_first leaves a fragmented frame
    if list(trials.columns):
        # combine_first sorts columns; keep the trials table's order first for readable output.
        order = [c for c in trials.columns if c in view] + [c for c in view if c not in trials]
        view = view[order]
    view[C.LABEL] = _labels(view)
    view[C.MODEL_LABEL] = _labels(view, C.ARCH_PREFIXES)
    view[C.LATENCY_MS] = _trial_latency(view, tables.get(C.LATENCY))
    view[C.PEAK_MEM_MB] = float("nan")
    view[C.PEAK_MEM_SOURCE] = None
    for _sweep, group in view.groupby(C.SWEEP, sort=False) if C.SWEEP in view else [(0, view)]:
        # One source per sweep, so that all its trials are compared on the same memory figure.
        src = first_present(group, tuple(col for col, _ in C.PEAK_MEM_SOURCES))
        if src:
            view.loc[group.index, C.PEAK_MEM_MB] = group[src].astype(float)
            view.loc[group.index, C.PEAK_MEM_SOURCE] = src
    return view


def peak_mem_label(view: pd.DataFrame) -> str:
    """Axis words for the view's PEAK_MEM_MB (the source of its first trial that has one)."""
    sources = view[C.PEAK_MEM_SOURCE].dropna() if C.PEAK_MEM_SOURCE in view else []
    words = dict(C.PEAK_MEM_SOURCES)
    return words.get(sources.iloc[0], "peak memory (MiB)") if len(sources) else "peak memory"


def reported_latency(latency: pd.DataFrame) -> pd.DataFrame:
    """Rows that measured something, of the model each trial reports on (untagged rows)."""
    if latency.empty or C.LAT_P50 not in latency:
        return latency
    lat = latency[latency[C.LAT_P50].notna()]
    if C.LAT_TAG in lat:
        untagged = lat[C.LAT_TAG].isna() | (lat[C.LAT_TAG].astype("string") == "")
        # A trial with only tagged rows keeps them: some measurement beats none.
        only_tagged = ~lat.groupby(list(C.KEY))[C.LAT_TAG].transform(
            lambda t: (t.isna() | (t.astype("string") == "")).any()
        )
        lat = lat[untagged | only_tagged]
    return lat


def _trial_latency(view: pd.DataFrame, latency: pd.DataFrame) -> pd.Series:
    """Per-instance latency per trial: batch size 1 at the trial's own input size."""
    col = first_present(view, C.TRIAL_LATENCY_MS)
    if col:
        return view[col].astype(float)
    out = pd.Series(float("nan"), index=view.index)
    latency = reported_latency(latency)
    if not has(latency, C.LAT_P50, *C.KEY):
        return out
    for idx, row in view.iterrows():
        rows = latency[
            (latency[C.SWEEP] == row[C.SWEEP]) & (latency[C.TRIAL_ID] == row[C.TRIAL_ID])
        ].dropna(subset=[C.LAT_P50])
        if rows.empty:
            continue
        if C.LAT_BATCH_SIZE in rows:
            rows = rows[rows[C.LAT_BATCH_SIZE] == rows[C.LAT_BATCH_SIZE].min()]
        if C.LAT_INPUT_SIZE in rows and C.IMG_SIZE in view and pd.notna(row.get(C.IMG_SIZE)):
            own = rows[rows[C.LAT_INPUT_SIZE] == row[C.IMG_SIZE]]
            rows = own if not own.empty else rows
        out[idx] = float(rows[C.LAT_P50].min())
    return out


def for_sweep(df: pd.DataFrame, sweep: object) -> pd.DataFrame:
    """The rows of one sweep (all rows when the table has no `sweep` column)."""
    if df.empty or C.SWEEP not in df or sweep is None:
        return df
    return df[df[C.SWEEP] == sweep]


def best_metric(view: pd.DataFrame, metric: str) -> pd.Series:
    """`best/<metric>` where stored, else the metric itself (a trial with one value)."""
    best = C.BEST_PREFIX + metric
    if best in view and metric in view:
        return view[best].fillna(view[metric])
    if best in view:
        return view[best]
    return view[metric] if metric in view else pd.Series(float("nan"), index=view.index)


def recovered_acc(view: pd.DataFrame) -> pd.Series:
    """Accuracy after pruning and recovery: `recovered/val/acc`, else the best `val/acc`."""
    best = best_metric(view, C.VAL_ACC)
    col = first_present(view, C.RECOVERED_ACC)
    return view[col].astype(float).fillna(best) if col else best
