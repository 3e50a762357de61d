"""Per-layer sensitivity: prune one layer alone at each ratio, measure how much accuracy drops.

`sensitivity_scan` returns rows of the `sensitivity` table, one per layer (or structured unit) x
ratio; the model is left exactly as it came in:

| column         | unit     | meaning                                                           |
|----------------|----------|-------------------------------------------------------------------|
| `layer`        |          | layer name (unstructured) or structured unit name (`blocks.0.mlp`)  |
| `kind`         |          | `weights`, `neurons`, `heads` or `channels`                        |
| `method`       |          | `unstructured` or `structured`                                      |
| `ratio`        | fraction | ratio asked for                                                    |
| `removed`      | fraction | share of the layer's weights actually zeroed or removed (rounding)   |
| `params`       | count    | weights of the layer (unit: all its layers) before pruning           |
| `base_acc`     | fraction | metric of the unpruned model                                       |
| `acc`          | fraction | metric with only this layer pruned                                   |
| `acc_drop`     | fraction | `base_acc - acc` (positive = worse)                                  |
| `f1_macro`     | fraction | macro F1 with only this layer pruned (when `evaluate` gives `val/f1_macro`) |
| `loss`         | nats     | loss with only this layer pruned (when `evaluate` gives `val/loss`)  |

`ratios_from_sensitivity` turns the table into per-layer ratios for a global target: each layer's
ratio is proportional to 1 / (its mean accuracy drop + a small floor), clipped to
[0, `max_ratio`], and scaled so the parameter-weighted mean equals the target: sensitive layers
are pruned less, robust ones more, and the model as a whole loses exactly the target share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import prune

from profilers.metric_registry import INT, F, S, declare_table
from trainables.pruning.apply import structured_prune
from trainables.pruning.targets import prunable_layers, structured_units

declare_table(
    "sensitivity",
    __name__,
    {
        "layer": (S, "", "layer (unstructured) or structured unit name"),
        "kind": (S, "", "weights, neurons, heads or channels"),
        "method": (S, "", "unstructured or structured"),
        "ratio": (F, "fraction", "ratio asked for"),
        "removed": (F, "fraction", "share of the layer's weights actually zeroed or removed"),
        "params": (INT, "count", "weights of the layer (unit: all its layers) before pruning"),
        "base_acc": (F, "fraction", "metric of the unpruned model"),
        "acc": (F, "fraction", "metric with only this layer pruned"),
        "acc_drop": (F, "fraction", "base_acc - acc (positive = worse)"),
        "f1_macro": (F, "fraction", "macro F1 with only this layer pruned"),
        "loss": (F, "nats", "loss with only this layer pruned"),
    },
)

Evaluate = Callable[[nn.Module], Mapping[str, float]]
Method = Literal["unstructured", "structured"]


def _result(evaluate: Evaluate, model: nn.Module, metric: str) -> dict:
    out = evaluate(model)
    if metric not in out:
        raise KeyError(
            f"evaluate() returned {sorted(out)}; the sensitivity metric {metric!r} is missing"
        )
    row = {"acc": float(out[metric])}
    if "val/f1_macro" in out:
        row["f1_macro"] = float(out["val/f1_macro"])
    if "val/loss" in out:
        row["loss"] = float(out["val/loss"])
    return row


def sensitivity_scan(
    model: nn.Module,
    evaluate: Evaluate,
    ratios: Iterable[float],
    *,
    method: Method = "unstructured",
    example_inputs: torch.Tensor | None = None,
    round_to: int | None = 8,
    metric: str = "val/acc",
) -> list[dict]:
    """One row per layer x ratio: accuracy with that layer alone pruned (see module docstring)."""
    ratios = [float(r) for r in ratios]
    for r in ratios:
        if not 0.0 <= r < 1.0:
            raise ValueError(f"sensitivity ratio {r!r}; accepted: 0 <= ratio < 1")
    base = _result(evaluate, model, metric)["acc"]
    rows: list[dict] = []

    def add(layer: str, kind: str, ratio: float, removed: float, params: int, res: dict) -> None:
        rows.append(
            {"layer": layer, "kind": kind, "method": method, "ratio": ratio, "removed": removed,
             "params": params, "base_acc": base, **res, "acc_drop": base - res["acc"]}
        )  # fmt: skip

    if method == "unstructured":
        for name, layer in prunable_layers(model).items():
            original = layer.weight.detach().clone()
            for r in ratios:
                if r > 0:
                    prune.l1_unstructured(layer, "weight", amount=r)
                    prune.remove(layer, "weight")
                removed = 1.0 - int(torch.count_nonzero(layer.weight)) / layer.weight.numel()
                try:
                    res = _result(evaluate, model, metric)
                finally:
                    with torch.no_grad():
                        layer.weight.copy_(original)
                add(name, "weights", r, removed, layer.weight.numel(), res)
        return rows
    if method != "structured":
        raise ValueError(f"prune.method={method!r}; accepted: unstructured, structured")
    if example_inputs is None:
        raise ValueError("structured sensitivity needs example_inputs to trace the model")
    modules = dict(model.named_modules())
    for unit in structured_units(model, example_inputs):
        params = sum(modules[n].weight.numel() for n in unit.layers)
        for r in ratios:
            pruned = copy.deepcopy(model) if r > 0 else model
            if r > 0:
                structured_prune(pruned, example_inputs, {unit.name: r}, round_to=round_to)
            kept = dict(pruned.named_modules())
            left = sum(kept[n].weight.numel() for n in unit.layers)
            add(
                unit.name,
                unit.kind,
                r,
                1.0 - left / params,
                params,
                _result(evaluate, pruned, metric),
            )
            del pruned
    return rows


def ratios_from_sensitivity(
    rows: Iterable[Mapping],
    target: float,
    sizes: Mapping[str, int],
    *,
    max_ratio: float = 0.9,
) -> dict[str, float]:
    """Per-layer ratios whose `sizes`-weighted mean is `target`; more sensitive -> pruned less."""
    if not 0.0 <= target <= max_ratio < 1.0:
        raise ValueError(
            f"target ratio {target!r} with max_ratio {max_ratio!r}; accepted: 0 <= target <= max_ratio < 1"
        )
    drops: dict[str, list[float]] = {name: [] for name in sizes}
    for row in rows:
        if row["layer"] in drops and row["ratio"] > 0:
            drops[row["layer"]].append(max(0.0, float(row["acc_drop"])))
    missing = sorted(name for name, d in drops.items() if not d)
    if missing:
        raise ValueError(f"no sensitivity rows with ratio > 0 for layers {missing}")
    score = {name: sum(d) / len(d) for name, d in drops.items()}
    floor = (
        0.1 * sum(score.values()) / len(score) + 1e-4
    )  # keeps robust layers finite, not infinite
    weight = {name: 1.0 / (s + floor) for name, s in score.items()}
    total = sum(sizes.values())

    def ratios_at(scale: float) -> dict[str, float]:
        return {name: min(max_ratio, scale * w) for name, w in weight.items()}

    def mean_ratio(scale: float) -> float:
        return sum(sizes[n] * r for n, r in ratios_at(scale).items()) / total

    # mean_ratio grows monotonically with scale, from 0 to max_ratio: bisect for the target.
    lo, hi = 0.0, max_ratio / min(weight.values())
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean_ratio(mid) < target else (lo, mid)
    return ratios_at(hi)
