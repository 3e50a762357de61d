"""Pruning on tiny models: layer discovery, unstructured sparsity, structured removal that shrinks MACs."""

from __future__ import annotations

import copy

import pytest
import torch
from fvcore.nn import FlopCountAnalysis
from torch import nn

from tests.pruning_models import inputs, tiny_cnn, tiny_vit
from trainables.pruning.apply import (
    hold_masks,
    make_permanent,
    structured_prune,
    unstructured_prune,
)
from trainables.pruning.targets import classifier_names, prunable_layers, structured_units

RATIOS = [0.1, 0.3, 0.5, 0.7]


def zero_share(model: nn.Module, names: list[str]) -> float:
    modules = dict(model.named_modules())
    zeros = sum(int((modules[n].weight == 0).sum()) for n in names)
    return zeros / sum(modules[n].weight.numel() for n in names)


def layer_macs(model: nn.Module, names: list[str]) -> int:
    flops = FlopCountAnalysis(model.eval(), inputs(1))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    by_module = flops.by_module()
    return sum(by_module[n] for n in names)


def layer_params(model: nn.Module, names: list[str]) -> int:
    modules = dict(model.named_modules())
    return sum(modules[n].weight.numel() for n in names)


def test_prunable_layers_skip_the_classifier():
    vit = tiny_vit()
    assert classifier_names(vit) == {"head"}
    names = list(prunable_layers(vit))
    per_block = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]
    assert names == ["patch_embed.proj"] + [f"blocks.{b}.{n}" for b in range(2) for n in per_block]
    assert "fc" not in prunable_layers(tiny_cnn())


def test_transformer_units_are_mlp_neurons_and_heads():
    units = {u.name: u for u in structured_units(tiny_vit(num_heads=8))}
    assert set(units) == {"blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp"}
    assert (units["blocks.0.attn"].kind, units["blocks.0.attn"].size) == ("heads", 8)
    assert (units["blocks.1.mlp"].kind, units["blocks.1.mlp"].size) == ("neurons", 256)


@pytest.mark.parametrize("ratio", RATIOS)
def test_global_unstructured_hits_the_target_sparsity(ratio):
    model = tiny_vit()
    names = list(prunable_layers(model))
    masks = unstructured_prune(model, ratio)
    assert abs(zero_share(model, names) - ratio) < 0.01
    # Permanent: plain weights, no reparametrisation left behind.
    assert not any(n.endswith(("weight_orig", "weight_mask")) for n, _ in model.named_parameters())
    assert not any(n.endswith("weight_mask") for n, _ in model.named_buffers())
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        assert torch.equal(mask, modules[name].weight != 0)


def test_global_threshold_prunes_layers_unevenly_but_per_layer_ratios_exactly():
    model = tiny_vit()
    names = list(prunable_layers(model))
    unstructured_prune(model, 0.5)
    shares = [zero_share(model, [n]) for n in names]
    assert max(shares) - min(shares) > 0.05  # one threshold over all layers, not 50% each

    model = tiny_vit()
    wanted = {"blocks.0.mlp.fc1": 0.2, "blocks.1.attn.qkv": 0.6}
    unstructured_prune(model, wanted)
    for name, ratio in wanted.items():
        assert zero_share(model, [name]) == pytest.approx(ratio, abs=1e-3)
    assert zero_share(model, ["blocks.0.attn.proj"]) == 0.0


def test_unstructured_rejects_bad_ratio_and_unknown_layer():
    with pytest.raises(ValueError, match=r"prune\.ratio"):
        unstructured_prune(tiny_vit(), 1.2)
    with pytest.raises(ValueError, match=r"blocks\.9\.mlp\.fc1"):
        unstructured_prune(tiny_vit(), {"blocks.9.mlp.fc1": 0.5})


def test_held_masks_keep_pruned_weights_zero_while_training():
    model = tiny_vit().train()
    masks = unstructured_prune(model, 0.5)
    hold_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(inputs(4)).sum().backward()
        opt.step()
    assert make_permanent(model) == len(masks)
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        assert not modules[name].weight[~mask].any()
    assert zero_share(model, list(masks)) == pytest.approx(0.5, abs=0.01)


def test_removing_a_head_equals_zeroing_its_qkv_rows():
    model = tiny_vit(num_heads=8)
    dense = copy.deepcopy(model)
    rows = structured_prune(model, inputs(), {"blocks.0.attn": 0.25}, round_to=8)
    assert {r["unit"]: (r["before"], r["after"]) for r in rows}["blocks.0.attn"] == (8, 6)
    attn, ref = model.blocks[0].attn, dense.blocks[0].attn
    assert (attn.num_heads, attn.head_dim, attn.qkv.out_features) == (6, 8, 3 * 6 * 8)
    # Which heads survived: their q rows are still in the pruned qkv weight.
    kept = [
        h
        for h in range(8)
        if any(torch.equal(ref.qkv.weight[h * 8], w) for w in attn.qkv.weight[:48])
    ]
    assert len(kept) == 6
    with torch.no_grad():
        for h in set(range(8)) - set(kept):
            for part in range(3):
                rows_ = slice(part * 64 + h * 8, part * 64 + (h + 1) * 8)
                ref.qkv.weight[rows_] = 0
                ref.qkv.bias[rows_] = 0
        torch.testing.assert_close(model(inputs()), dense(inputs()), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ratio", RATIOS)
def test_structured_vit_cuts_params_and_macs_of_pruned_layers_by_about_ratio(ratio):
    model = tiny_vit(num_heads=8)
    names = [
        f"blocks.{b}.{n}" for b in range(2) for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    ]
    params0, macs0 = layer_params(model, names), layer_macs(model, names)
    rows = structured_prune(model, inputs(), ratio, round_to=8)
    params_cut = 1 - layer_params(model, names) / params0
    macs_cut = 1 - layer_macs(model, names) / macs0
    assert params_cut == pytest.approx(ratio, abs=0.06)
    assert macs_cut == pytest.approx(ratio, abs=0.06)
    for block in model.blocks:
        assert block.mlp.fc1.out_features % 8 == 0
        assert block.attn.num_heads >= 1
        assert block.attn.qkv.out_features == 3 * block.attn.num_heads * block.attn.head_dim
    assert all(r["after"] < r["before"] for r in rows if r["kind"] == "neurons")
    # Heads are ranked across the model: `ratio` of all 16 go, whichever layer they sit in.
    heads_kept = sum(r["after"] for r in rows if r["kind"] == "heads")
    assert abs(heads_kept - 16 * (1 - ratio)) < 1


@pytest.mark.parametrize(
    "ratio", [0.9, 0.95, {"blocks.0.attn": 0.9, "blocks.1.attn": 0.5, "blocks.1.mlp": 0.99}]
)
def test_structured_never_empties_a_unit_nor_narrows_the_residual(ratio):
    model = tiny_vit(num_heads=8)
    rows = structured_prune(model, inputs(), ratio, round_to=8)
    after = {r["unit"]: r["after"] for r in rows}
    # What was asked did shrink, to the last head or round_to neurons rather than to nothing.
    named = ratio if isinstance(ratio, dict) else after
    assert all(r["after"] < r["before"] for r in rows if r["unit"] in named)
    if isinstance(ratio, dict):
        assert (after["blocks.0.attn"], after["blocks.1.mlp"]) == (1, 8)
    for b, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        assert attn.num_heads == after[f"blocks.{b}.attn"] >= 1
        # Whole heads go: head_dim stays, and timm's reshapes (num_heads, attn_dim) match qkv.
        assert attn.head_dim == 8 and attn.attn_dim == 8 * attn.num_heads
        assert (attn.qkv.out_features, attn.proj.in_features) == (3 * attn.attn_dim, attn.attn_dim)
        assert mlp.fc1.out_features == after[f"blocks.{b}.mlp"] >= 8
        assert mlp.fc1.out_features % 8 == 0
        assert attn.proj.out_features == mlp.fc2.out_features == 64  # the residual width
    assert model.patch_embed.proj.out_channels == model.pos_embed.shape[-1] == 64
    assert (model.head.in_features, model.head.out_features) == (64, 10)
    assert model.train()(inputs()).shape == (2, 10)


def test_per_unit_ratios_shrink_only_the_named_units():
    model = tiny_vit(num_heads=8)
    rows = structured_prune(model, inputs(), {"blocks.0.attn": 0.5, "blocks.1.mlp": 0.3})
    assert {r["unit"]: (r["kind"], r["before"], r["after"]) for r in rows} == {
        "blocks.0.attn": ("heads", 8, 4),
        "blocks.0.mlp": ("neurons", 256, 256),
        "blocks.1.attn": ("heads", 8, 8),
        "blocks.1.mlp": ("neurons", 256, 176),  # 30% of 256 leaves 179, down to a multiple of 8
    }
    with pytest.raises(ValueError, match=r"blocks\.9\.mlp"):
        structured_prune(tiny_vit(), inputs(), {"blocks.9.mlp": 0.5})
    with pytest.raises(ValueError, match=r"prune\.ratio"):
        structured_prune(tiny_vit(), inputs(), 1.0)


def test_structurally_pruned_vit_still_trains():
    model = tiny_vit(num_heads=8)
    structured_prune(model, inputs(), 0.5, round_to=8)
    model.train()
    x, y = inputs(8), torch.arange(8) % 10
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


def test_structured_cnn_removes_channels_in_multiples_of_eight_and_runs():
    model = tiny_cnn()
    names = list(prunable_layers(model))
    macs0, params0 = layer_macs(model, names), layer_params(model, names)
    units = structured_units(model, inputs())
    assert {u.kind for u in units} == {"channels"}
    rows = structured_prune(model, inputs(), 0.5, round_to=8)
    assert any(r["after"] < r["before"] for r in rows)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    # The residual add still matches: stem and conv2 share the coupled channel count.
    assert model.stem[0].out_channels == model.conv2.out_channels
    assert model.fc.out_features == 10
    assert layer_macs(model, names) < 0.8 * macs0
    assert layer_params(model, names) < 0.8 * params0
    assert model(inputs()).shape == (2, 10)


def test_structured_ratio_zero_changes_nothing():
    model = tiny_vit()
    dense = copy.deepcopy(model)
    rows = structured_prune(model, inputs(), 0.0)
    assert all(r["before"] == r["after"] for r in rows)
    torch.testing.assert_close(model(inputs()), dense(inputs()))
