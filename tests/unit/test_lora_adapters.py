"""LoRA on tiny timm models: trainable counts from shapes, rank order, merge, optimizer state."""

from __future__ import annotations

import pytest
import timm
import torch

from trainables.adapters.lora import (
    apply_lora,
    count_params,
    expected_trainable_params,
    lora_metrics,
    merge_lora,
    optimizer_state_bytes_per_param,
    resolve_targets,
)
from trainables.config import LoraConfig, OptimConfig

EMBED = 192  # vit_tiny width
DEPTH = 2  # tiny_vit's blocks
CLASSES = 10


def vit_lora_trainable_by_hand(rank: int, depth: int = DEPTH, embed: int = EMBED) -> int:
    """Trainable parameters of LoRA on a timm ViT's qkv + attn.proj, from the architecture alone.

    Per block, qkv is Linear(D -> 3D) and attn.proj Linear(D -> D); a rank-r adapter on a layer
    (in -> out) adds A (r x in) and B (out x r). The head Linear(D -> classes) trains whole.
    """
    per_block = rank * (embed + 3 * embed) + rank * (embed + embed)
    return depth * per_block + embed * CLASSES + CLASSES


def tiny_vit(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=CLASSES, img_size=32, depth=2
    )


def tiny_swin() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=CLASSES,
        img_size=32,
        window_size=4,
        depths=(1, 1),
        num_heads=(1, 2),
        embed_dim=16,
    )


def lora(rank: int, targets: list[str] | None = None) -> LoraConfig:
    return LoraConfig(rank=rank, alpha=16, dropout=0.0, target_modules=targets or ["qkv", "proj"])


@pytest.mark.parametrize("rank", [4, 8])
def test_vit_trainable_count_is_adapter_shapes_plus_head(rank: int) -> None:
    # Per block: qkv is Linear(192 -> 576), attn.proj Linear(192 -> 192); a rank-r adapter on
    # (out, in) adds r * (in + out). patch_embed.proj is a conv and must not be adapted.
    per_block = rank * (EMBED + 3 * EMBED) + rank * (EMBED + EMBED)
    head = EMBED * CLASSES + CLASSES
    by_hand = DEPTH * per_block + head
    model = tiny_vit()
    assert expected_trainable_params(model, lora(rank)) == by_hand
    total_before, _ = count_params(model)
    wrapped = apply_lora(model, lora(rank))
    total, trainable = count_params(wrapped)
    assert trainable == by_hand
    # Adapters add parameters; the base keeps its own.
    assert total == total_before + DEPTH * per_block


def test_swin_mlp_targets_count_and_head_stays_trainable() -> None:
    # Stage 1 (dim 16): fc1 16->64, fc2 64->16; stage 2 (dim 32): fc1 32->128, fc2 128->32.
    rank = 2
    by_hand = rank * (2 * (16 + 64) + 2 * (32 + 128)) + (32 * CLASSES + CLASSES)
    model = tiny_swin()
    wrapped = apply_lora(model, lora(rank, ["fc1", "fc2"]))
    assert count_params(wrapped)[1] == by_hand
    head = wrapped.get_base_model().head.fc
    assert head.weight.requires_grad and head.bias.requires_grad


def test_higher_rank_never_has_fewer_trainable_params() -> None:
    counts = [count_params(apply_lora(tiny_vit(), lora(r)))[1] for r in (1, 2, 4, 8, 16, 32)]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    assert counts[4] > counts[3]  # rank 16 trains more than rank 8
    assert counts == [vit_lora_trainable_by_hand(r) for r in (1, 2, 4, 8, 16, 32)]
    # Linear in the rank: doubling the rank doubles the adapter share.
    assert counts[2] - counts[1] == 2 * (counts[1] - counts[0])


def test_rank_zero_is_the_full_finetune_baseline() -> None:
    model = tiny_vit()
    for p in model.parameters():
        p.requires_grad_(False)  # even a frozen model comes back fully trainable
    baseline = apply_lora(model, lora(0))
    total, trainable = count_params(baseline)
    assert baseline is model and trainable == total
    metrics = lora_metrics(baseline, total, OptimConfig())
    assert metrics["params/trainable_pct"] == 100.0
    assert metrics["lora/adapter_params"] == 0 and metrics["lora/opt_state_saved_mb"] == 0


def test_merged_and_unmerged_outputs_agree() -> None:
    base_out_model = tiny_vit()
    wrapped = apply_lora(tiny_vit(), lora(4, ["qkv", "proj", "fc1", "fc2"]))
    # lora_B starts at zero (adapter = identity); give it weights so merging has work to do.
    torch.manual_seed(1)
    for name, p in wrapped.named_parameters():
        if ".lora_B." in name:
            p.data.normal_(0, 0.05)
    wrapped.eval()
    base_out_model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        unmerged = wrapped(x)
        merged_model = merge_lora(wrapped)
        merged = merged_model(x)
        base = base_out_model(x)
    assert not torch.allclose(unmerged, base, atol=1e-3), "adapters had no effect"
    torch.testing.assert_close(merged, unmerged, atol=1e-5, rtol=1e-4)
    assert count_params(merged_model)[0] == count_params(base_out_model)[0]
    assert not any(".lora_" in n for n, _ in merged_model.named_parameters())


def test_training_moves_only_adapters_and_head() -> None:
    wrapped = apply_lora(tiny_vit(), lora(4))
    before = {n: p.detach().clone() for n, p in wrapped.named_parameters()}
    opt = torch.optim.SGD([p for p in wrapped.parameters() if p.requires_grad], lr=0.5)
    loss = wrapped(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    loss.backward()
    opt.step()
    changed = {n for n, p in wrapped.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing trained"
    assert all(".lora_" in n or ".head." in n for n in changed), sorted(changed)[:5]


def test_unknown_target_names_the_targets_and_what_exists() -> None:
    with pytest.raises(ValueError, match=r"qvk.*qkv"):
        resolve_targets(tiny_vit(), ["qvk"])
    resnet = timm.create_model("resnet18", pretrained=False, num_classes=CLASSES)
    with pytest.raises(
        ValueError, match=r"match no linear or \(ungrouped\) Conv2d layer of ResNet.*conv2"
    ):
        apply_lora(resnet, lora(4))


@pytest.mark.parametrize(("name", "bytes_per_param"), [("adamw", 8.0), ("sgd", 4.0)])
def test_optimizer_state_bytes_per_param(name: str, bytes_per_param: float) -> None:
    # AdamW keeps two fp32 moments per parameter, SGD with momentum one buffer.
    assert optimizer_state_bytes_per_param(OptimConfig(name=name)) == bytes_per_param


def test_lora_metrics_report_the_optimizer_memory_saved() -> None:
    model = tiny_vit()
    base_params = count_params(model)[0]
    wrapped = apply_lora(model, lora(4))
    m = lora_metrics(wrapped, base_params, OptimConfig(name="adamw"))
    assert m["params/trainable"] == vit_lora_trainable_by_hand(4)
    assert m["lora/adapter_params"] == DEPTH * (4 * (EMBED + 3 * EMBED) + 4 * (EMBED + EMBED))
    assert 0 < m["params/trainable_pct"] < 100
    assert m["lora/adapted_modules"] == 4  # qkv + proj in 2 blocks
    assert m["lora/opt_state_full_mb"] == pytest.approx(8 * base_params / 2**20)
    assert m["lora/opt_state_saved_mb"] == pytest.approx(
        8 * (base_params - m["params/trainable"]) / 2**20
    )
