"""Pruning itself: unstructured masks (torch.nn.utils.prune) and structured removal (torch-pruning).

- `unstructured_prune` zeroes single weights by magnitude, either with one global threshold over
  every targeted layer (`prune.global_unstructured`, the default) or with a ratio per layer (from
  the sensitivity analysis). The masks are made permanent (`prune.remove`) before it returns, so
  what is measured afterwards is a plain model; the masks are returned for `hold_masks`, which keeps
  pruned weights at zero while the model recovers (fine-tunes).
- `structured_prune` removes whole MLP neurons, attention heads or conv channels with
  torch-pruning's pruner (`tp.pruner.BasePruner`, which torch-pruning 1.6 also exports as the
  deprecated `MetaPruner`), so layers really shrink: MACs, parameters and latency drop. Element
  scores are torch-pruning's `GroupMagnitudeImportance` (group L2 norm over every layer the element
  touches, divided by the group's mean so layers of different scale compete fairly). A single
  ratio ranks each kind of element across the model (`global_pruning`, one ranking scope per kind
  in `pruning_ratio_dict`, `head_pruning_ratio` for heads); a mapping gives each unit its own share
  (`pruning_ratio_dict`, `head_pruning_ratio_dict`). Neuron and channel counts kept are multiples
  of `round_to` (odd widths run slower); heads go whole (`prune_num_heads`). Every unit keeps at
  least one head or `round_to` neurons, so the model still runs. The residual (embedding) width and
  the classifier's outputs are never pruned (`ignored_layers`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import prune

from trainables.pruning.targets import (
    StructuredUnit,
    classifier_names,
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


class _NoEmptyLayerPruner(tp.pruner.BasePruner):
    """torch-pruning's pruner, except that it never empties a layer.

    The library quietly skips a group that rounding or its global ranking would empty
    (`check_pruning_group`): a unit asked to lose 95% would lose nothing, and an attention whose
    every head ranked lowest would keep its weights while the pruner counted its heads as gone.
    """

    def _round_to(self, n_pruned: int, current_channels: int, round_to: int) -> int:
        # The library floors the kept count to a multiple of round_to, down to 0: keep one granule.
        n_pruned = super()._round_to(n_pruned, current_channels, round_to)
        return min(n_pruned, current_channels - min(round_to, current_channels))

    def estimate_importance(self, group) -> torch.Tensor | None:
        imp = super().estimate_importance(group)
        heads = [
            self.num_heads[d.target.module]
            for d, _ in group
            if d.target.module in self.num_heads and self.DG.is_out_channel_pruning_fn(d.handler)
        ]
        if imp is None or not heads:
            return imp
        # Each attention's best head outranks every other head, so the global head threshold
        # (its ratio capped by `_global_head_ratio`) always leaves one per layer.
        imp = imp.clone()
        per_head = imp.view(heads[0], -1)
        per_head[per_head.mean(1).argmax()] = float("inf")
        return imp


def _global_head_ratio(ratio: float, heads: list[int]) -> float:
    """`ratio` of all heads, capped so that every attention can keep its best head."""
    total = sum(heads)
    if not heads or int(total * (1 - ratio)) >= total:
        return 0.0  # not one head to remove
    # torch-pruning keeps int(total * (1 - ratio)) heads: at least one per attention.
    return max(0.0, min(ratio, 1 - (len(heads) + 0.5) / total))


def _unit_head_ratio(ratio: float, heads: int) -> float:
    """`ratio` of one attention's heads, capped so that it keeps one (torch-pruning removes ceil)."""
    return max(0.0, min(ratio, (heads - 1.5) / heads))


def _pruner_options(
    units: list[StructuredUnit], modules: dict[str, nn.Module], ratio: Ratios
) -> dict:
    """Ratios as BasePruner options: one ranking scope per kind (a float) or per unit (a mapping).

    Every unit is keyed by its root layer (the one whose outputs index its elements); the default
    `pruning_ratio` is 0, so nothing outside the units shrinks.
    """
    heads = [u for u in units if u.kind == "heads"]
    options: dict = {"pruning_ratio": 0.0}
    if isinstance(ratio, Mapping):
        _check_names(ratio, [u.name for u in units], "structured units")
        wanted = {u.name: float(ratio[u.name]) for u in units if u.name in ratio}
        options["global_pruning"] = False
        options["pruning_ratio_dict"] = {
            modules[u.root]: wanted[u.name] for u in units if u.name in wanted
        }
        options["head_pruning_ratio_dict"] = {
            modules[u.root]: _unit_head_ratio(wanted[u.name], u.size)
            for u in heads
            if u.name in wanted
        }
        return options
    _check_ratio("prune.ratio", ratio)
    options["global_pruning"] = True
    options["pruning_ratio_dict"] = {}
    for kind in ("neurons", "heads", "channels"):
        roots = tuple(modules[u.root] for u in units if u.kind == kind)
        if roots:  # a tuple key is one scope: its elements are ranked together
            options["pruning_ratio_dict"][roots] = float(ratio)
    options["head_pruning_ratio"] = _global_head_ratio(float(ratio), [u.size for u in heads])
    return options


def _residual_layers(model: nn.Module, units: list[StructuredUnit]) -> list[nn.Module]:
    """Layers whose outputs are the residual stream (MLP fc2, attention proj): never narrowed."""
    modules = dict(model.named_modules())
    return [
        modules[f"{u.name}.{last}"]
        for u in units
        for last in {"neurons": ("fc2",), "heads": ("proj",)}.get(u.kind, ())
    ]


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
    units = structured_units(model, example_inputs)
    if not units:
        raise ValueError(f"{type(model).__name__} has no structured units torch-pruning can remove")
    modules = dict(model.named_modules())
    options = _pruner_options(units, modules, ratio)
    classifier = [modules[n] for n in classifier_names(model)]
    was_training = model.training
    model.eval()  # traced as it will run; BatchNorm statistics untouched
    try:
        with quiet_torch_pruning():
            pruner = _NoEmptyLayerPruner(
                model,
                example_inputs,
                importance=tp.importance.GroupMagnitudeImportance(p=2),
                ignored_layers=classifier + _residual_layers(model, units),
                round_to=round_to or 1,
                num_heads={modules[u.root]: u.size for u in units if u.kind == "heads"},
                prune_num_heads=True,
                prune_head_dims=False,
                # Fresh dicts: BasePruner's defaults are shared mutable dicts it writes into.
                in_channel_groups={},
                out_channel_groups={},
                **options,
            )
            pruner.step()
    finally:
        model.train(was_training)

    rows = []
    for unit in units:
        root = modules[unit.root]
        if unit.kind == "heads":
            kept = pruner.num_heads[root]
            attn = modules[unit.name]
            # timm reshapes q, k, v by num_heads and the attention output by attn_dim.
            attn.num_heads, attn.attn_dim = kept, kept * attn.head_dim
            if root.out_features != 3 * attn.attn_dim:
                raise RuntimeError(
                    f"torch-pruning left {unit.name} inconsistent: qkv has {root.out_features} "
                    f"outputs for {kept} heads of {attn.head_dim}"
                )
        else:
            kept = pruner.DG.get_out_channels(root)
        rows.append({"unit": unit.name, "kind": unit.kind, "before": unit.size, "after": kept})
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
