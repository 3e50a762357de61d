"""A short, data-driven list of findings: each line follows from numbers in the tables.

Accuracy is `best/val/acc` (or `val/acc`); "one point" is one percentage point of accuracy. A
finding appears only when its data exists and it says something (e.g. "the cheapest trial within
one point of the best" is skipped when that trial is the best one).
"""

from __future__ import annotations

import pandas as pd

from orchestrator.report import columns as C
from orchestrator.report.caveats import at_chance, group_caveats, trial_caveats
from orchestrator.report.groups import GROUP, N, groups, has_repeats, mean_view, overlaps
from orchestrator.report.pareto import pareto_mask
from orchestrator.report.tables import best_metric, has, recovered_acc

# Cost axes, cheapest first: (column in the trial view, words, unit, format).
COSTS = (
    (C.GMACS, "forward compute", "GMACs", "{:.3g}"),
    (C.LATENCY_MS, "latency at batch size 1", "ms", "{:.3g}"),
    (C.PEAK_MEM_MB, "peak memory", "MB", "{:.4g}"),
    (C.EPOCH_S, "time per epoch", "s", "{:.3g}"),
)


def _acc(x: float) -> str:
    return f"{x:.3f} ({100 * x:.1f}%)"


def _names(view: pd.DataFrame, mask: pd.Series) -> str:
    return ", ".join(view.loc[mask, C.LABEL].astype(str))


def recommendations(view: pd.DataFrame, group_by: str | None = None) -> list[str]:
    """Findings for the trials in `view` (the report's one-row-per-trial frame).

    Where trials repeat (seeds, or the `group_by` keys), the first findings are about groups:
    the best group by mean accuracy with its 95% interval, and the groups it cannot be told
    apart from (overlapping intervals).
    """
    if view.empty:
        return []
    lines: list[str] = group_findings(view, group_by)
    trials = view
    repeats = has_repeats(view, group_by)
    if repeats:
        # Every later finding compares groups by their means, not single seeds.
        view = mean_view(view, group_by)
    acc = best_metric(view, C.VAL_ACC)
    ok = acc.notna()
    if ok.any():
        best_idx = acc[ok].idxmax()
        best = float(acc[best_idx])
        if not repeats:
            lines.append(f"Best accuracy: {view.at[best_idx, C.LABEL]} with val/acc {_acc(best)}.")
        near = ok & (acc >= best - C.ONE_POINT)
        lines += _cheapest_near_best(view, near, best_idx, best)
        lines += _pareto_lines(view, acc)
        lines += _lora_lines(view, acc)
        lines += _prune_lines(view, recovered_acc(view))
    if has(view, C.SAMPLES_PER_S) and view[C.SAMPLES_PER_S].notna().sum() > 1:
        fast = view[C.SAMPLES_PER_S].idxmax()
        lines.append(
            f"Fastest training: {view.at[fast, C.LABEL]} at "
            f"{view.at[fast, C.SAMPLES_PER_S]:.4g} samples/s."
        )
    if repeats:
        lines = lines[:2] + [f"(Group means) {x}" for x in lines[2:]]
    view = trials
    lines += _failure_lines(view)
    if C.SMOKE in view and view[C.SMOKE].fillna(False).astype(bool).any():
        lines.append(
            "Some trials ran with --smoke (a few batches on a tiny subset): their accuracies "
            "prove the pipeline runs, not what the models can reach."
        )
    return lines


def grouped_recommendations(
    view: pd.DataFrame, group_by: str | None = None
) -> list[tuple[str, list[str]]]:
    """(heading, lines) per stage and trainable of one sweep: trials of different stages or
    trainables (an 8-batch LoRA epoch, a 45-batch pretraining one) are never compared. Each
    group's caveats come first; at chance accuracy they say why its findings cannot be trusted."""
    keys = [c for c in (C.STAGE, C.TRAINABLE) if c in view]
    parts = list(view.groupby(keys, sort=False, dropna=False)) if keys else [((), view)]
    out = []
    for key, g in parts:
        named = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=False))
        stage, trainable = named.get(C.STAGE), named.get(C.TRAINABLE)
        heading = " ".join(
            x
            for x in (
                f"stage {stage}" if isinstance(stage, str) and stage else "",
                f"({trainable})" if isinstance(trainable, str) and trainable else "",
            )
            if x
        )
        heading = heading if len(parts) > 1 else ""
        lines = caveat_lines(g) + recommendations(g, group_by)
        if lines:
            out.append((heading, lines))
    return out


def caveat_lines(view: pd.DataFrame) -> list[str]:
    """Warnings for a group of trials: chance accuracy, substituted weights, lock waits, noisy
    latency, CPU RSS of shared workers (`orchestrator.report.caveats`)."""
    lines: list[str] = []
    chance = view.apply(at_chance, axis=1) if len(view) else pd.Series(dtype=bool)
    if chance.any():
        lines.append(
            f"Warning: {int(chance.sum())} of {len(view)} trials reached only chance accuracy: "
            "they learnt next to nothing, so the accuracy-based findings below cannot be trusted"
            " (a model trained from random weights, e.g. --no-pretrained, too few epochs, or a "
            "learning rate that does not fit)."
        )
    seen: set[str] = set()
    for _, row in view.iterrows():
        for caveat in trial_caveats(row):
            if caveat.flag == "chance":
                continue
            text = f"Warning ({caveat.flag}): {caveat.text}."
            if caveat.flag != "substituted":
                text = f"Warning ({caveat.flag}): {row.get(C.LABEL, row.get(C.TRIAL_ID))} {caveat.text}."
            if text not in seen:
                seen.add(text)
                lines.append(text)
    lines += [f"Warning: {t}." for t in group_caveats(view) if "chance" not in t]
    return lines


def group_findings(view: pd.DataFrame, group_by: str | None = None) -> list[str]:
    """The best group of repeats by mean accuracy, and the groups its interval overlaps."""
    acc_col = C.BEST_PREFIX + C.VAL_ACC if has(view, C.BEST_PREFIX + C.VAL_ACC) else C.VAL_ACC
    if not has(view, acc_col):
        return []
    g = groups(view, group_by, metrics=[acc_col])
    if g.empty or g[N].max() < 2 or len(g) < 2:
        return []
    mean, lo, hi = (g[f"{acc_col} {s}"] for s in ("mean", "ci95_lo", "ci95_hi"))
    if mean.isna().all():
        return []
    best = mean.idxmax()
    b = g.loc[best]
    lines = [
        f"Best group by mean {acc_col}: {b[GROUP]} with {_acc(float(mean[best]))}, 95% CI "
        f"[{lo[best]:.3f}, {hi[best]:.3f}] over n = {int(b[N])} repeats."
    ]
    tied = [
        str(g.at[i, GROUP])
        for i in g.index
        if i != best and overlaps((lo[best], hi[best]), (lo[i], hi[i]))
    ]
    if tied:
        lines.append(
            f"Cannot be told apart from the best (95% intervals overlap): {', '.join(tied)}. "
            "More repeats would narrow the intervals."
        )
    else:
        lines.append(
            f"Its interval overlaps no other group's: {b[GROUP]} is better than the other "
            f"{len(g) - 1} groups beyond the seed-to-seed spread."
        )
    return lines


def _cheapest_near_best(
    view: pd.DataFrame, near: pd.Series, best_idx: object, best: float
) -> list[str]:
    lines = []
    for col, words, unit, fmt in COSTS:
        if not has(view, col):
            continue
        cand = view.loc[near & view[col].notna(), col].astype(float)
        if cand.empty:
            continue
        cheap_idx = cand.idxmin()
        best_cost = view.at[best_idx, col]
        if cheap_idx == best_idx or pd.isna(best_cost) or cand[cheap_idx] >= float(best_cost):
            continue
        saving = 1 - cand[cheap_idx] / float(best_cost)
        if saving < 0.005:  # a saving that rounds to 0% is no recommendation
            continue
        acc = best_metric(view, C.VAL_ACC)[cheap_idx]
        lines.append(
            f"Cheapest within one point of the best ({words}): {view.at[cheap_idx, C.LABEL]} "
            f"at {fmt.format(cand[cheap_idx])} {unit}, {saving:.0%} less than the best trial, "
            f"with val/acc {_acc(float(acc))}."
        )
        break  # the first cost axis the trials differ on is the one that matters most
    return lines


def _pareto_lines(view: pd.DataFrame, acc: pd.Series) -> list[str]:
    lines = []
    for col, words, _unit, _fmt in COSTS[:3]:
        if not has(view, col) or view[col].notna().sum() < 2:
            continue
        mask = pareto_mask(view[col], acc)
        if mask.any():
            lines.append(f"Pareto-optimal in val/acc vs {words}: {_names(view, mask)}.")
    return lines


def _lora_lines(view: pd.DataFrame, acc: pd.Series) -> list[str]:
    if not has(view, C.LORA_RANK) or view[C.LORA_RANK].nunique() < 2:
        return []
    lora = view[view[C.LORA_RANK].notna() & acc.notna()]
    if lora.empty:
        return []
    top = float(acc[lora.index].max())
    near = lora[acc[lora.index] >= top - C.ONE_POINT]
    # Rank 0 is the full fine-tune baseline: the smallest LoRA rank is the smallest positive one.
    adapters = near[near[C.LORA_RANK] > 0]
    if adapters.empty:
        return []
    idx = adapters[C.LORA_RANK].astype(float).idxmin()
    share = (
        f", training {view.at[idx, C.TRAINABLE_PCT]:.3g}% of the parameters"
        if C.TRAINABLE_PCT in view and pd.notna(view.at[idx, C.TRAINABLE_PCT])
        else ""
    )
    return [
        f"Smallest LoRA rank within one point of the best LoRA/full result: rank "
        f"{int(view.at[idx, C.LORA_RANK])} ({view.at[idx, C.LABEL]}){share}, val/acc "
        f"{_acc(float(acc[idx]))}."
    ]


def _prune_lines(view: pd.DataFrame, acc: pd.Series) -> list[str]:
    if not has(view, C.PRUNE_RATIO) or view[C.PRUNE_RATIO].nunique() < 2:
        return []
    lines = []
    method = view[C.PRUNE_METHOD] if C.PRUNE_METHOD in view else pd.Series("", index=view.index)
    for name, group in view[view[C.PRUNE_RATIO].notna() & acc.notna()].groupby(
        method.fillna(""), sort=True
    ):
        top = float(acc[group.index].max())
        near = group[acc[group.index] >= top - C.ONE_POINT]
        idx = near[C.PRUNE_RATIO].astype(float).idxmax()
        label = f"{name} pruning" if name else "pruning"
        lines.append(
            f"Highest {label} ratio within one point of the best recovered accuracy: "
            f"{view.at[idx, C.PRUNE_RATIO]:g} ({view.at[idx, C.LABEL]}), val/acc "
            f"{_acc(float(acc[idx]))}."
        )
    return lines


def _failure_lines(view: pd.DataFrame) -> list[str]:
    failed_mask = pd.Series(False, index=view.index)
    if C.STATUS in view:
        failed_mask |= view[C.STATUS].astype("string").str.lower().isin(C.FAILED_STATUSES)
    if C.ERROR in view:
        failed_mask |= view[C.ERROR].astype("string").str.strip().fillna("").ne("")
    failed = view[failed_mask]
    if failed.empty:
        return []
    first = failed.iloc[0]
    err = str(first.get(C.ERROR) or "").strip().splitlines()
    why = f": {err[-1][:200]}" if err else ""
    statuses = (
        f" (status {', '.join(sorted(failed[C.STATUS].astype(str).unique()))})"
        if C.STATUS in failed
        else ""
    )
    return [
        f"{len(failed)} of {len(view)} trials did not finish{statuses}; first: "
        f"{first[C.LABEL]}{why}."
    ]
