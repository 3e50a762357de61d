"""Where numbers mean less than they seem: per-trial flags the end-of-run summary, the report and
MLflow all show, computed once here from a trials frame (one row per trial, Parquet column names).

A trial is flagged when
- `chance`: its best val/acc is within a margin of chance (below `CHANCE_FACTOR` x 1 / classes):
  it learnt (next to) nothing, and comparing its accuracy with others' says nothing;
- `substituted`: its weights or data were swapped (`--no-pretrained`, `--smoke`: the
  `substitutions` column) or it ran under `--smoke`;
- `lock wait`: it waited on the device lock for more than `LOCK_WAIT_SHARE` of an epoch
  (`time/lock_wait_s` is inside `time/epoch_s`, so its epoch time is not its own);
- `noisy latency`: a latency point's spread is past its threshold (a `latency/*noisy*` flag where
  the latency profiler sets one, else p99 above `LATENCY_SPREAD` x p50).
A group of trials is flagged when its peak memory is CPU RSS measured in workers that ran trial
after trial (`isolation: reuse`, `mem/cpu_rss_scope: process`): one trial's RSS carries the
allocator state its predecessors left, so those figures do not compare across trials.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

CHANCE_FACTOR = 1.5  # best val/acc below 1.5 x chance (0.15 on 10 classes) counts as chance level
LOCK_WAIT_SHARE = 0.2  # lock waits above 20 % of an epoch
LATENCY_SPREAD = 2.0  # p99 over 2 x p50

ACC = "best/val/acc"
# Classes of the built-in datasets, where a trial carries no `data/num_classes`.
KNOWN_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}


@dataclass(frozen=True)
class Caveat:
    flag: str  # short, for a table cell
    text: str  # the sentence a reader needs


def num_classes(row: pd.Series) -> int | None:
    for key in ("data/num_classes",):
        value = row.get(key)
        if _num(value) is not None and float(value) >= 2:
            return int(value)
    name = str(row.get("dataset.name") or "")
    if name == "synthetic" and _num(row.get("dataset.num_classes")) is not None:
        return int(row["dataset.num_classes"])
    return KNOWN_CLASSES.get(name)


def _num(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(float(value)) else float(value)


def chance_level(row: pd.Series) -> float | None:
    """1 / number of classes, when the trial's dataset says how many."""
    n = num_classes(row)
    return 1.0 / n if n else None


def at_chance(row: pd.Series) -> bool:
    acc, chance = _num(row.get(ACC)), chance_level(row)
    return acc is not None and chance is not None and acc < CHANCE_FACTOR * chance


def trial_caveats(row: pd.Series) -> list[Caveat]:
    """The caveats of one trial (a row of the trials table)."""
    out: list[Caveat] = []
    if at_chance(row):
        chance = chance_level(row)
        out.append(
            Caveat(
                "chance",
                f"best val/acc {float(row[ACC]):.3f} is at chance level (1/{num_classes(row)} = "
                f"{chance:.3f}): the model learnt next to nothing, its accuracy compares with "
                "nothing",
            )
        )
    subs = _substitutions(row)
    smoke = row.get("smoke")
    if subs or (isinstance(smoke, bool | np.bool_) and bool(smoke)):
        what = "; ".join(subs) or "--smoke: a few batches of a small subset"
        out.append(Caveat("substituted", f"ran on substitutes ({what})"))
    wait, epoch = _num(row.get("time/lock_wait_s")), _num(row.get("time/epoch_s"))
    if wait is not None and epoch and wait > LOCK_WAIT_SHARE * epoch:
        out.append(
            Caveat(
                "lock wait",
                f"waited {wait:.3g} s of a {epoch:.3g} s epoch on the device lock: its epoch time "
                "is mostly other trials' profiling",
            )
        )
    noisy = _noisy_latency(row)
    if noisy:
        out.append(Caveat("noisy latency", noisy))
    return out


def _substitutions(row: pd.Series) -> list[str]:
    value = row.get("substitutions")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                return [str(v) for v in json.loads(text)]
            except ValueError:
                return [text]
        return [text] if text else []
    try:
        return [str(v) for v in value]
    except TypeError:
        return []


def _noisy_latency(row: pd.Series) -> str | None:
    flagged = [
        k
        for k, v in row.items()
        if isinstance(k, str) and k.startswith(("latency/", "merged/latency/")) and "noisy" in k
        if v is True or (isinstance(v, int | float) and not isinstance(v, bool) and v == 1)
    ]
    if flagged:
        return f"latency points flagged noisy ({', '.join(flagged)}): repeat on a quiet machine"
    has_flag = any(
        isinstance(k, str) and "noisy" in k and k.startswith("latency/") and _known(v)
        for k, v in row.items()
    )
    if has_flag:
        return None  # the latency profiler judged its points (coefficient of variation): trust it
    for prefix in ("latency/", "merged/latency/"):
        p50, p99 = _num(row.get(f"{prefix}b1_ms_p50")), _num(row.get(f"{prefix}b1_ms_p99"))
        if p50 and p99 is not None and p99 > LATENCY_SPREAD * p50:
            return (
                f"{prefix}b1 p99 {p99:.3g} ms is {p99 / p50:.1f}x its p50 {p50:.3g} ms: the "
                "machine was busy, the point is noisy"
            )
    return None


def _known(value: object) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def group_caveats(trials: pd.DataFrame, *, isolation: str | None = None) -> list[str]:
    """Caveats of a set of trials compared together (a sweep, or a stage of one); `isolation` is
    the sweep's, where the caller knows it (the trials table does not carry it)."""
    out: list[str] = []
    if trials.empty:
        return out
    scope = trials.get("mem/cpu_rss_scope")
    gpu = trials.get("mem/gpu_peak_allocated_mb")
    reuse = trials.get("isolation")
    if isolation is not None:
        reuse = pd.Series([isolation] * len(trials), index=trials.index)
    cpu_only = gpu is None or gpu.isna().all()
    shared = scope is not None and (scope.astype("string") == "process").any()
    reused = trials.get("env/process_trials")
    shared = shared or (reused is not None and bool((reused.fillna(0) > 1).any()))
    if reuse is not None:
        shared = shared or (reuse.astype("string") == "reuse").any()
    if cpu_only and shared and len(trials) > 1 and "mem/cpu_peak_rss_mb" in trials:
        out.append(
            "peak memory here is CPU RSS of worker processes that ran trial after trial "
            "(isolation: reuse): each figure carries what earlier trials left, so they do not "
            "compare across trials (run with isolation: process to compare them)"
        )
    chance = trials.apply(at_chance, axis=1) if len(trials) else pd.Series(dtype=bool)
    if chance.any():
        n = int(chance.sum())
        out.append(
            f"{n} of {len(trials)} trial(s) at chance accuracy: accuracy-based rankings among "
            "them cannot be trusted"
            + (
                " (weights were substituted: --no-pretrained / --smoke)"
                if _any_subs(trials)
                else ""
            )
        )
    return out


def _any_subs(trials: pd.DataFrame) -> bool:
    return bool(trials.apply(lambda r: bool(_substitutions(r)), axis=1).any())


def caveat_flags(trials: pd.DataFrame) -> pd.Series:
    """Per row, its caveats' short flags joined (`chance, substituted`), '' when none."""
    if trials.empty:
        return pd.Series(dtype="string")
    return trials.apply(lambda r: ", ".join(c.flag for c in trial_caveats(r)), axis=1)
