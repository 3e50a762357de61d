"""What pruning may touch in a model: prunable layers and structured units.

Two views of one model:

- **Layers** (unstructured pruning, per-layer sensitivity): every convolution and linear layer
  except the classifier, named as in `model.named_modules()` (`blocks.0.mlp.fc1`, `layer1.0.conv1`).
  The classifier is left alone because its rows are the classes themselves.
- **Structured units** (structured pruning): what can be *removed* so shapes shrink.
  In a transformer (timm `Mlp` / `Attention` blocks): the hidden neurons of each MLP
  (`blocks.0.mlp`, kind `neurons`, rooted at `fc1`'s outputs) and the heads of each attention
  (`blocks.0.attn`, kind `heads`, rooted at `qkv`'s outputs). The residual width (embedding
  dimension) is never pruned there, so residual additions keep matching. In a model without such
  blocks (a CNN): each channel group torch-pruning's dependency graph finds (kind `channels`, named
  by its root convolution), the classifier's outputs excluded.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from trainables.models.heads import classifier_names as head_names

UnitKind = Literal["neurons", "heads", "channels"]
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class StructuredUnit:
    """One prunable structure: its `size` elements (neurons, heads or channels) go together."""

    name: str
    kind: UnitKind
    root: str  # layer whose outputs index the elements (the key torch-pruning's pruner takes)
    layers: tuple[str, ...]  # conv/linear layers whose weights shrink when elements go
    size: int  # elements now (neurons, heads or channels)


def classifier_names(model: nn.Module) -> set[str]:
    """Names of the classifier's modules and their submodules (see `trainables.models.heads`)."""
    try:
        heads = head_names(model)
    except ValueError:  # no nn.Linear at all: nothing to protect
        return set()
    return {
        n for n, _ in model.named_modules() if any(n == h or n.startswith(f"{h}.") for h in heads)
    }


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Convolution and linear layers that carry a weight, classifier excluded, in model order."""
    skip = classifier_names(model)
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, LAYER_TYPES)
        and name not in skip
        and isinstance(getattr(m, "weight", None), torch.Tensor)
    }


def _timm_blocks() -> tuple[type[nn.Module], type[nn.Module]]:
    from timm.layers import Attention, Mlp

    return Mlp, Attention


def transformer_units(model: nn.Module) -> list[StructuredUnit]:
    """MLP neurons and attention heads of timm `Mlp` / `Attention` modules (none for a CNN)."""
    mlp_type, attn_type = _timm_blocks()
    units: list[StructuredUnit] = []
    for name, m in model.named_modules():
        # Exact types: subclasses (gated MLPs, other attentions) wire their channels differently.
        if type(m) is mlp_type and isinstance(m.fc1, nn.Linear) and isinstance(m.fc2, nn.Linear):
            units.append(
                StructuredUnit(
                    name=name,
                    kind="neurons",
                    root=f"{name}.fc1",
                    layers=(f"{name}.fc1", f"{name}.fc2"),
                    size=m.fc1.out_features,
                )
            )
        elif type(m) is attn_type and getattr(m, "gate", None) is None:
            units.append(
                StructuredUnit(
                    name=name,
                    kind="heads",
                    root=f"{name}.qkv",
                    layers=(f"{name}.qkv", f"{name}.proj"),
                    size=m.num_heads,
                )
            )
    return units


@contextmanager
def quiet_torch_pruning() -> Iterator[None]:
    """torch-pruning warns about cls_token/pos_embed, which we never prune (residual width kept)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unwrapped parameters detected")
        yield


def build_graph(model: nn.Module, example_inputs: torch.Tensor):  # -> tp.DependencyGraph
    """torch-pruning's dependency graph of `model`, traced with one forward of `example_inputs`."""
    import torch_pruning as tp

    was_training = model.training
    model.eval()
    try:
        with quiet_torch_pruning():
            return tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs)
    finally:
        model.train(was_training)


def channel_units(model: nn.Module, graph) -> list[StructuredUnit]:
    """Channel groups of a CNN from the dependency graph: coupled channels are one unit."""
    names = {m: n for n, m in model.named_modules()}
    classifier = [m for n, m in model.named_modules() if n in classifier_names(model)]
    units: list[StructuredUnit] = []
    for group in graph.get_all_groups(
        ignored_layers=classifier, root_module_types=[nn.modules.conv._ConvNd, nn.Linear]
    ):
        root = group[0].dep.target.module
        if isinstance(root, nn.modules.conv._ConvNd) and root.groups > 1:
            continue  # grouped/depthwise convs follow the group of the layer that feeds them
        layers = []
        for dep, _ in group:
            target = dep.target.module
            if isinstance(target, LAYER_TYPES) and target in names and names[target] not in layers:
                layers.append(names[target])
        units.append(
            StructuredUnit(
                name=names[root],
                kind="channels",
                root=names[root],
                layers=tuple(layers),
                size=graph.get_out_channels(root),
            )
        )
    return units


def structured_units(
    model: nn.Module, example_inputs: torch.Tensor | None = None
) -> list[StructuredUnit]:
    """Transformer units when the model has timm blocks, else CNN channel groups (needs inputs)."""
    units = transformer_units(model)
    if units:
        return units
    if example_inputs is None:
        raise ValueError("channel pruning needs example_inputs to trace the model's graph")
    return channel_units(model, build_graph(model, example_inputs))
