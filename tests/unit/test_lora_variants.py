"""LoRA beyond the basics: rslora and DoRA, peft's `all-linear`, and Conv2d adapters on CNNs; every
count checked against peft's own (`get_nb_trainable_parameters`) and the layer shapes."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from trainables.adapters.lora import (
    apply_lora,
    count_params,
    expected_trainable_params,
    merge_lora,
    resolve_targets,
)
from trainables.config import LoraConfig, ModelConfig
from trainables.models.create import create_model

VIT = {"name": "vit_ti16", "img_size": 16, "patch_size": 8, "kwargs": {"depth": 1}}
RESNET = {"name": "resnet10t", "img_size": 32}
EFFNET = {"name": "efficientnet_b0", "img_size": 32}
CASES = [
    (VIT, {"target_modules": ["qkv", "proj"]}),
    (VIT, {"target_modules": "all-linear"}),
    (RESNET, {"target_modules": ["conv1", "conv2"]}),
    (EFFNET, {"target_modules": ["conv_pw", "conv_pwl"]}),
]


def build(model: dict[str, Any]) -> nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(**model), num_classes=5)


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
@pytest.mark.parametrize(("model", "lora"), CASES, ids=["vit", "all-linear", "resnet", "effnet"])
def test_counts_agree_with_peft_and_shapes(
    model: dict[str, Any], lora: dict[str, Any], variant: str
) -> None:
    base = build(model)
    cfg = LoraConfig(rank=4, alpha=8, dropout=0.0, variant=variant, **lora)
    expected = expected_trainable_params(base, cfg)
    wrapped = apply_lora(base, cfg)
    peft_trainable, peft_total = wrapped.get_nb_trainable_parameters()
    assert count_params(wrapped) == (peft_total, peft_trainable)
    assert peft_trainable == expected
    x = torch.randn(2, 3, model["img_size"], model["img_size"])
    wrapped(x).sum().backward()
    grads = [n for n, p in wrapped.named_parameters() if p.grad is not None]
    assert any(".lora_B." in n for n in grads)
    assert any("lora_magnitude" in n for n in grads) == (variant == "dora")


@pytest.mark.parametrize("variant", ["lora", "rslora", "dora"])
def test_merge_keeps_outputs_for_linear_and_conv(variant: str) -> None:
    for model, lora in (CASES[0], CASES[2]):
        wrapped = apply_lora(build(model), LoraConfig(rank=4, variant=variant, dropout=0.0, **lora))
        # Move B off zero so the adapters change the output, then merge them in.
        with torch.no_grad():
            for n, p in wrapped.named_parameters():
                if ".lora_B." in n:
                    p.normal_(0, 0.05)
        x = torch.randn(2, 3, model["img_size"], model["img_size"])
        wrapped.eval()
        before = wrapped(x)
        merged = merge_lora(wrapped)
        assert not any(".lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(before, merged(x), atol=1e-4)


def test_rslora_scales_by_sqrt_rank() -> None:
    plain = apply_lora(build(VIT), LoraConfig(rank=16, alpha=8, target_modules=["qkv"]))
    rs = apply_lora(
        build(VIT), LoraConfig(rank=16, alpha=8, target_modules=["qkv"], variant="rslora")
    )
    layer = "base_model.model.blocks.0.attn.qkv"
    assert plain.get_submodule(layer).scaling["default"] == pytest.approx(8 / 16)
    assert rs.get_submodule(layer).scaling["default"] == pytest.approx(8 / 4)


def test_all_linear_is_peft_choice_without_the_head() -> None:
    base = build(VIT)
    ours = set(resolve_targets(base, "all-linear"))
    wrapped = apply_lora(base, LoraConfig(rank=2, target_modules="all-linear"))
    adapted = {
        n.removeprefix("base_model.model.").removesuffix(".lora_A")
        for n, _ in wrapped.named_modules()
        if n.endswith(".lora_A")
    }
    assert adapted == ours
    assert "head" not in ours and {"blocks.0.mlp.fc1", "blocks.0.attn.qkv"} <= ours


def test_patch_embedding_only_when_named_in_full() -> None:
    base = build(VIT)
    assert "patch_embed.proj" not in resolve_targets(base, ["proj"])
    assert "blocks.0.attn.proj" in resolve_targets(base, ["proj"])
    assert resolve_targets(base, ["patch_embed.proj"]) == ["patch_embed.proj"]


def test_depthwise_convs_are_left_out_and_bad_targets_explained() -> None:
    base = build(EFFNET)
    found = resolve_targets(base, ["conv_dw", "conv_pw"])
    assert found and all(base.get_submodule(n).groups == 1 for n in found)
    with pytest.raises(ValueError, match="match no linear or"):
        resolve_targets(base, ["conv_dw"])
    with pytest.raises(ValueError, match="match no linear or"):
        resolve_targets(build(RESNET), ["qkv"])
