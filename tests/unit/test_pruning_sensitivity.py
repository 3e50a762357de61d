"""Sensitivity scan, sensitivity-derived ratios, and the figures pruning is judged by."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from tests.pruning_models import inputs, tiny_vit
from trainables.pruning.apply import structured_prune, unstructured_prune
from trainables.pruning.figures import (
    csr_bytes,
    histogram_edges,
    sparsity_figures,
    targeted_numel,
    weight_histogram_rows,
)
from trainables.pruning.sensitivity import ratios_from_sensitivity, sensitivity_scan
from trainables.pruning.targets import prunable_layers, structured_units


def agreement_eval(dense: nn.Module, n: int = 32):
    """evaluate(model) -> accuracy against the dense model's own predictions (dense scores 1.0)."""
    x = inputs(n)
    with torch.no_grad():
        labels = dense(x).argmax(1)

    def evaluate(model: nn.Module) -> dict:
        with torch.no_grad():
            logits = model.eval()(x)
        return {
            "val/acc": float((logits.argmax(1) == labels).float().mean()),
            "val/loss": float(nn.functional.cross_entropy(logits, labels)),
        }

    return evaluate


def test_unstructured_scan_has_a_row_per_layer_and_ratio_and_restores_the_model():
    model = tiny_vit()
    before = copy.deepcopy(model.state_dict())
    ratios = [0.0, 0.5, 0.9]
    rows = sensitivity_scan(model, agreement_eval(copy.deepcopy(model)), ratios)
    layers = list(prunable_layers(model))
    assert [(r["layer"], r["ratio"]) for r in rows] == [(n, r) for n in layers for r in ratios]
    for row in rows:
        assert row["base_acc"] == 1.0
        assert row["removed"] == pytest.approx(row["ratio"], abs=1e-3)
        if row["ratio"] == 0.0:
            assert row["acc_drop"] == 0.0 and row["acc"] == 1.0
    assert max(r["acc_drop"] for r in rows) > 0  # pruning 90% of some layer alone does hurt
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and before.keys() == after.keys()


def test_structured_scan_prunes_one_unit_at_a_time():
    model = tiny_vit(num_heads=8)
    rows = sensitivity_scan(
        model,
        agreement_eval(copy.deepcopy(model)),
        [0.0, 0.5],
        method="structured",
        example_inputs=inputs(),
    )
    units = structured_units(model)
    assert len(rows) == 2 * len(units)
    for row in rows:
        if row["ratio"] == 0.0:
            assert row["acc_drop"] == 0.0 and row["removed"] == 0.0
        else:
            assert row["removed"] == pytest.approx(0.5, abs=0.05)
    assert model.blocks[0].attn.num_heads == 8  # the scan pruned copies, not the model


def test_sensitive_layers_get_lower_ratios_and_the_mean_hits_the_target():
    rows = [
        {"layer": "fragile", "ratio": 0.5, "acc_drop": 0.30},
        {"layer": "fragile", "ratio": 0.0, "acc_drop": 0.0},
        {"layer": "middle", "ratio": 0.5, "acc_drop": 0.05},
        {"layer": "robust", "ratio": 0.5, "acc_drop": 0.0},
    ]
    sizes = {"fragile": 1000, "middle": 1000, "robust": 2000}
    ratios = ratios_from_sensitivity(rows, 0.5, sizes, max_ratio=0.9)
    assert ratios["fragile"] < ratios["middle"] < ratios["robust"] <= 0.9
    mean = sum(sizes[n] * r for n, r in ratios.items()) / sum(sizes.values())
    assert mean == pytest.approx(0.5, abs=1e-6)
    equal = ratios_from_sensitivity(
        [{"layer": n, "ratio": 0.5, "acc_drop": 0.1} for n in sizes], 0.3, sizes
    )
    assert all(r == pytest.approx(0.3) for r in equal.values())
    with pytest.raises(ValueError, match="max_ratio"):
        ratios_from_sensitivity(rows, 0.95, sizes, max_ratio=0.9)


def test_sensitivity_ratios_drive_a_global_step_that_still_hits_the_target():
    model = tiny_vit()
    rows = sensitivity_scan(model, agreement_eval(copy.deepcopy(model)), [0.5, 0.9])
    layers = prunable_layers(model)
    sizes = {n: m.weight.numel() for n, m in layers.items()}
    ratios = ratios_from_sensitivity(rows, 0.5, sizes)
    unstructured_prune(model, ratios)
    figures = sparsity_figures(model, layers, targeted_numel(model, layers))
    assert figures["prune/sparsity"] == pytest.approx(0.5, abs=0.01)


def test_csr_bytes_by_hand():
    w = torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]])
    assert csr_bytes(w) == 3 * (4 + 4) + (2 + 1) * 4  # values + column indices + row pointers
    conv = torch.zeros(4, 2, 3, 3)
    conv[0, 0, 0, 0] = 1.0
    assert csr_bytes(conv) == 1 * 8 + 5 * 4


def test_sparsity_figures_unstructured_and_structured():
    model = tiny_vit()
    layers = list(prunable_layers(model))
    dense_targeted = targeted_numel(model, layers)
    total = sum(p.numel() for p in model.parameters())
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())  # timm zero-inits biases
    dense = sparsity_figures(model, layers, dense_targeted)
    assert dense["prune/sparsity"] == 0.0 and dense["params/nonzero"] == nonzero
    assert dense["prune/model_sparsity"] == pytest.approx(1 - nonzero / total)
    # CSR of a dense weight costs twice its fp32 bytes plus row pointers.
    assert dense["model/sparse_size_mb"] > 4 * total / 2**20

    unstructured_prune(model, 0.7)
    pruned = sparsity_figures(model, layers, dense_targeted)
    assert pruned["prune/sparsity"] == pytest.approx(0.7, abs=0.005)
    assert pruned["params/nonzero"] == nonzero - round(0.7 * dense_targeted)
    assert pruned["prune/model_sparsity"] == pytest.approx(1 - pruned["params/nonzero"] / total)
    assert pruned["model/sparse_size_mb"] < 4 * total / 2**20  # at 70% CSR finally saves space

    model = tiny_vit(num_heads=8)
    names = [n for u in structured_units(model) for n in u.layers]
    dense_targeted = targeted_numel(model, names)
    dense = sparsity_figures(model, names, dense_targeted)
    structured_prune(model, inputs(), 0.5)
    figures = sparsity_figures(model, names, dense_targeted)
    assert figures["prune/sparsity"] == pytest.approx(0.5, abs=0.06)
    # Weights are gone, not zero: only timm's zero-initialised biases are zeros, as before.
    assert figures["prune/model_sparsity"] < dense["prune/model_sparsity"] + 0.01


def test_weight_histograms_share_bins_across_phases_and_skip_zeros():
    model = tiny_vit()
    layers = ["blocks.0.mlp.fc1", "blocks.1.attn.qkv"]
    edges = histogram_edges(model, layers, bins=16)
    before = weight_histogram_rows(model, edges, "before")
    unstructured_prune(model, 0.5)
    pruned = weight_histogram_rows(model, edges, "pruned")
    modules = dict(model.named_modules())
    for name in layers:
        b = [r for r in before if r["layer"] == name]
        p = [r for r in pruned if r["layer"] == name]
        assert len(b) == len(p) == 16
        assert [r["bin_left"] for r in b] == [r["bin_left"] for r in p]
        assert sum(r["count"] for r in b) == modules[name].weight.numel()
        assert sum(r["count"] for r in p) == int(torch.count_nonzero(modules[name].weight))
        # Magnitude pruning empties the bins around zero and leaves the tails.
        centre = [r["count"] for r in p if r["bin_left"] < 0 < r["bin_right"]]
        assert centre == [0]
        assert p[0]["count"] == b[0]["count"]
    assert set(before[0]) == {"layer", "phase", "bin_left", "bin_right", "count"}
    assert np.isclose(before[0]["bin_left"], float(modules[layers[0]].weight.detach().min()))
