"""Pruning itself: unstructured masks (torch.nn.utils.prune) and structured removal (torch-pruning).

- `unstructured_prune` zeroes single weights by magnitude, either with one global threshold over
  every targeted layer (`prune.global_unstructured`, the default) or with a ratio per layer (from
  the sensitivity analysis). The masks are made permanent (`prune.remove`) before it returns, so
  what is measured afterwards is a plain model; the masks are returned for `hold_masks`, which keeps
  pruned weights at zero while the model recovers (fine-tunes).
- `structured_prune` removes whole MLP neurons, attention heads or conv channels with
  torch-pruning's dependency graph, so layers really shrink: MACs, parameters and latency drop.
  Element scores are torch-pruning's `GroupMagnitudeImportance` (group L2 norm over every layer the
  element touches, divided by the group's mean so layers of different scale compete fairly).
  Neuron and channel counts kept are rounded to a multiple of `round_to` (odd widths run slower);
  every unit keeps at least one head or `round_to` neurons, so the model still runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import prune

from trainables.prune_targets import (
    StructuredUnit,
    build_graph,
    prunable_layers,
    quiet_torch_pruning,
    structured_units,
)

Ratios = float | Mapping[str, float]


def _check_ratio(key: str, ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"pruning ratio {key}={ratio!r} is out of range; accepted: 0 <= ratio < 1")


def _check_names(ratios: Mapping[str, float], known: list[str], what: str) -> None:
    unknown = sorted(set(ratios) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} {unknown} in per-layer ratios; known: {known}")
    for name, r in ratios.items():
        _check_ratio(name, r)


def make_permanent(model: nn.Module) -> int:
    """`prune.remove` on every pruned parameter: masks baked into plain weights. Returns the count."""
    count = 0
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
                count += 1
    return count


def unstructured_prune(
    model: nn.Module,
    ratio: Ratios,
    layers: Mapping[str, nn.Module] | None = None,
) -> dict[str, torch.Tensor]:
    """Zero the smallest-magnitude weights; return {layer: bool mask of kept weights}.

    `ratio` a float: one global L1 threshold over all `layers` (default: `prunable_layers`), so
    `ratio` of all their weights become zero and robust layers lose more than fragile ones.
    `ratio` a mapping {layer name: ratio}: each named layer loses its own share; others are kept.
    """
    layers = dict(layers) if layers is not None else prunable_layers(model)
    if isinstance(ratio, Mapping):
        _check_names(ratio, list(layers), "layers")
        for name, r in ratio.items():
            prune.l1_unstructured(layers[name], "weight", amount=float(r))
        pruned = {name: layers[name] for name in ratio}
    else:
        _check_ratio("prune.ratio", ratio)
        prune.global_unstructured(
            [(m, "weight") for m in layers.values()],
            pruning_method=prune.L1Unstructured,
            amount=float(ratio),
        )
        pruned = layers
    masks = {name: m.weight_mask.detach().bool().clone() for name, m in pruned.items()}
    make_permanent(model)
    return masks


def hold_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Re-attach masks so fine-tuning cannot regrow pruned weights (undo with `make_permanent`)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module = modules[name]
        prune.custom_from_mask(module, "weight", mask.to(module.weight.device))


def _round_kept(kept: int, size: int, granule: int, minimum: int) -> int:
    """Round a kept count to the nearest multiple of `granule`, within [minimum, size]."""
    if granule > 1:
        kept = math.floor(kept / granule + 0.5) * granule
    return min(size, max(minimum, kept))


def _scores(graph, modules: dict[str, nn.Module], unit: StructuredUnit, importance) -> torch.Tensor:
    """One importance score per element of `unit` (neuron, head or channel)."""
    root = modules[unit.root]
    pruner = graph.get_pruner_of_module(root)
    if unit.kind == "heads":
        fn, width = pruner.prune_in_channels, unit.size * unit.granule
    else:
        fn, width = pruner.prune_out_channels, unit.size
    group = graph.get_pruning_group(root, fn, list(range(width)))
    imp = importance(group)
    if imp is None:  # no weighted layer in the group: fall back on the root's own weight norm
        weight = root.weight.detach().flatten(1) if unit.kind != "heads" else root.weight.detach().T
        imp = weight.norm(dim=1)
    imp = imp.detach().float().cpu()
    return imp.view(unit.size, unit.granule).mean(1) if unit.kind == "heads" else imp


def _removal_counts(
    units: list[StructuredUnit], scores: dict[str, torch.Tensor], ratio: Ratios
) -> dict[str, int]:
    """Elements to remove per unit: a global ranking per kind, or each unit's own ratio."""
    if isinstance(ratio, Mapping):
        _check_names(ratio, [u.name for u in units], "structured units")
        return {u.name: round(u.size * float(ratio.get(u.name, 0.0))) for u in units}
    _check_ratio("prune.ratio", ratio)
    counts = {u.name: 0 for u in units}
    for kind in ("neurons", "heads", "channels"):
        of_kind = [u for u in units if u.kind == kind]
        if not of_kind:
            continue
        flat = torch.cat([scores[u.name] for u in of_kind])
        owner = torch.cat([torch.full((u.size,), i) for i, u in enumerate(of_kind)])
        n_remove = round(float(ratio) * len(flat))
        lowest = owner[torch.argsort(flat, stable=True)[:n_remove]]
        for i, u in enumerate(of_kind):
            counts[u.name] = int((lowest == i).sum())
    return counts


def structured_prune(
    model: nn.Module,
    example_inputs: torch.Tensor,
    ratio: Ratios,
    *,
    round_to: int | None = 8,
) -> list[dict]:
    """Remove neurons/heads/channels in place; return one row per unit (unit, kind, before, after).

    `ratio` a float: per kind, the lowest-scored `ratio` of all elements across the model go
    (global ranking). A mapping {unit name: ratio}: each unit loses its own share.
    """
    import torch_pruning as tp

    graph = build_graph(model, example_inputs)
    units = structured_units(model, graph=graph)
    if not units:
        raise ValueError(f"{type(model).__name__} has no structured units torch-pruning can remove")
    modules = dict(model.named_modules())
    importance = tp.importance.GroupMagnitudeImportance(p=2)
    with quiet_torch_pruning():
        scores = {u.name: _scores(graph, modules, u, importance) for u in units}
    counts = _removal_counts(units, scores, ratio)

    rows = []
    for unit in units:
        granule = 1 if unit.kind == "heads" else (round_to or 1)
        minimum = 1 if unit.kind == "heads" else min(unit.size, granule)
        kept = unit.size - counts[unit.name]
        if counts[unit.name] > 0:
            kept = _round_kept(kept, unit.size, granule, minimum)
        else:
            kept = unit.size
        rows.append({"unit": unit.name, "kind": unit.kind, "before": unit.size, "after": kept})
        if kept == unit.size:
            continue
        drop = torch.argsort(scores[unit.name], stable=True)[: unit.size - kept]
        root = modules[unit.root]
        pruner = graph.get_pruner_of_module(root)
        if unit.kind == "heads":
            idxs = [
                h * unit.granule + j for h in sorted(drop.tolist()) for j in range(unit.granule)
            ]
            fn = pruner.prune_in_channels
        else:
            idxs = sorted(drop.tolist())
            fn = pruner.prune_out_channels
        group = graph.get_pruning_group(root, fn, idxs)
        if not graph.check_pruning_group(group):
            raise RuntimeError(f"torch-pruning refused to remove {len(idxs)} of {unit.name}")
        group.prune()
        if unit.kind == "heads":
            attn = modules[unit.name]
            attn.num_heads = kept
            attn.attn_dim = kept * attn.head_dim  # timm reshapes attention output to attn_dim
    _check_runs(model, example_inputs)
    return rows


def _check_runs(model: nn.Module, example_inputs: torch.Tensor) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_inputs)
    except RuntimeError as err:
        raise RuntimeError(f"the structurally pruned model no longer runs: {err}") from err
    finally:
        model.train(was_training)
