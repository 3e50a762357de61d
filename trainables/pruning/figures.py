"""What pruning did to a model: sparsity, non-zero parameters, sparse-format size, weight histograms.

Measure a plain model (masks made permanent). Keys of `sparsity_figures`:

| key                    | unit     | meaning                                                              |
|------------------------|----------|----------------------------------------------------------------------|
| `prune/sparsity`       | fraction | share of the targeted weights (prunable layers of the dense model) that are zero or removed: `1 - non-zero targeted weights now / targeted weights of the dense model` |
| `prune/model_sparsity` | fraction | zeros among all parameters of the model as it is                     |
| `params/nonzero`       | count    | parameters that are not exactly zero                                 |
| `model/sparse_size_mb` | MiB      | `model/size_mb` (parameters and buffers, 2**20 bytes) if every targeted layer's weight were stored as CSR (values + int32 column indices + int32 row pointers, conv weights as [out, in*k*k]); everything else dense |

Unstructured pruning raises `prune/sparsity` but leaves shapes, MACs and latency of dense kernels
as they were; CSR only saves space beyond 50% sparsity at fp32 (each kept value carries a 4-byte
index). Structured pruning removes weights, so `prune/sparsity` counts removed weights as pruned
while `prune/model_sparsity` stays near zero.

`layer_rows` gives rows of the `pruned_layers` table, one per targeted layer: `layer`, `before`
(weights in the dense model), `after` (non-zero weights now), `sparsity` (`1 - after / before`):
where a global threshold or the sensitivity allocation put the cuts.

`weight_histogram_rows` gives rows of the `weights` table: `layer`, `phase` (before / pruned /
recovered), `bin_left`, `bin_right`, `count`. Exact zeros (pruned weights) are left out so the
shape of the surviving weights shows; one layer keeps the same bins in every phase, and values
outside them are clipped into the edge bins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from profilers.metric_registry import INT, F, S, declare, declare_table

declare(
    __name__,
    {
        "prune/sparsity": (F, "fraction", "zeros among the weights the pruning method targets"),
        "prune/model_sparsity": (F, "fraction", "zeros among all parameters"),
        "params/nonzero": (INT, "count", "parameters that are not exactly zero"),
        "model/sparse_size_mb": (F, "MiB", "size with the targeted weights stored as CSR"),
    },
)

declare_table(
    "pruned_layers",
    __name__,
    {
        "layer": (S, "", "targeted layer"),
        "before": (INT, "count", "weights of the layer in the dense model"),
        "after": (INT, "count", "non-zero weights of the layer now"),
        "sparsity": (F, "fraction", "1 - after / before"),
    },
)
declare_table(
    "weights",
    __name__,
    {
        "layer": (S, "", "targeted layer"),
        "phase": (S, "", "before, pruned or recovered"),
        "bin_left": (F, "", "left edge of the bin (weight value)"),
        "bin_right": (F, "", "right edge of the bin (weight value)"),
        "count": (INT, "count", "non-zero weights in the bin"),
    },
)

MIB = float(2**20)  # as `model/size_mb` (profilers/params.py), so the two compare directly
INDEX_BYTES = 4  # int32 indices: what scipy and cuSPARSE use while nnz fits in 2**31


def csr_bytes(weight: torch.Tensor, *, index_bytes: int = INDEX_BYTES) -> int:
    """Bytes of `weight` as CSR (rows = first dim): nnz values + nnz column indices + row pointers."""
    rows = weight.shape[0] if weight.dim() > 1 else 1
    nnz = int(torch.count_nonzero(weight))
    return nnz * (weight.element_size() + index_bytes) + (rows + 1) * index_bytes


def targeted_numel(model: nn.Module, layers: Iterable[str]) -> int:
    """Weights in the named layers (call on the dense model: the denominator of `prune/sparsity`)."""
    modules = dict(model.named_modules())
    return sum(modules[name].weight.numel() for name in layers)


def sparsity_figures(model: nn.Module, layers: Iterable[str], dense_targeted: int) -> dict:
    """`prune/sparsity`, `prune/model_sparsity`, `params/nonzero`, `model/sparse_size_mb`."""
    if dense_targeted <= 0:
        raise ValueError(f"dense_targeted={dense_targeted!r}: the dense model's targeted weights")
    modules = dict(model.named_modules())
    layers = list(layers)
    targeted = {id(modules[name].weight) for name in layers}
    total = nonzero = sparse_bytes = 0
    for p in model.parameters():
        total += p.numel()
        nonzero += int(torch.count_nonzero(p))
        sparse_bytes += csr_bytes(p) if id(p) in targeted else p.numel() * p.element_size()
    sparse_bytes += sum(b.numel() * b.element_size() for b in model.buffers())
    targeted_nonzero = sum(int(torch.count_nonzero(modules[n].weight)) for n in layers)
    return {
        "prune/sparsity": 1.0 - targeted_nonzero / dense_targeted,
        "prune/model_sparsity": 1.0 - nonzero / total if total else None,
        "params/nonzero": nonzero,
        "model/sparse_size_mb": sparse_bytes / MIB,
    }


def layer_rows(model: nn.Module, dense_numel: Mapping[str, int]) -> list[dict]:
    """Rows (layer, before, after, sparsity): weights per layer in the dense model vs non-zero now."""
    modules = dict(model.named_modules())
    rows = []
    for name, before in dense_numel.items():
        after = int(torch.count_nonzero(modules[name].weight))
        rows.append(
            {"layer": name, "before": before, "after": after, "sparsity": 1.0 - after / before}
        )
    return rows


def _nonzero_values(model: nn.Module, name: str) -> np.ndarray:
    weight = dict(model.named_modules())[name].weight.detach().float().cpu().flatten()
    return weight[weight != 0].numpy()


def histogram_edges(
    model: nn.Module, layers: Iterable[str], bins: int = 64
) -> dict[str, np.ndarray]:
    """Bin edges per layer from its current (dense) weights, shared by every later phase."""
    if bins < 1:
        raise ValueError(f"histogram bins={bins!r}; accepted: an integer >= 1")
    edges = {}
    for name in layers:
        values = _nonzero_values(model, name)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (-1.0, 1.0)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges[name] = np.linspace(lo, hi, bins + 1)
    return edges


def weight_histogram_rows(
    model: nn.Module, edges: Mapping[str, np.ndarray], phase: str
) -> list[dict]:
    """Rows (layer, phase, bin_left, bin_right, count) of each layer's non-zero weights."""
    rows = []
    for name, bin_edges in edges.items():
        values = np.clip(_nonzero_values(model, name), bin_edges[0], bin_edges[-1])
        counts, _ = np.histogram(values, bins=bin_edges)
        rows.extend(
            {
                "layer": name,
                "phase": phase,
                "bin_left": float(bin_edges[i]),
                "bin_right": float(bin_edges[i + 1]),
                "count": int(c),
            }
            for i, c in enumerate(counts)
        )
    return rows
