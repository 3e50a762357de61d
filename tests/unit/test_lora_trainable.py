"""The lora trainable end to end (no Ray): counts, merged vs unmerged profiles, rank 0 baseline."""

from __future__ import annotations

from typing import Any

import pytest
import timm

from trainables import lora
from trainables.loop.reporting import ListReporter

# ViT-Tiny cut to one block of width 64 on 16 px inputs (4 patches): LoRA's layers, little compute.
KWARGS = {"patch_size": 8, "depth": 1, "embed_dim": 64, "num_heads": 2}
CLASSES = 10  # digits


def trainable_by_hand(rank: int) -> int:
    """LoRA on qkv (D -> 3D) and attn.proj (D -> D) of each block, plus the whole head (D -> 10).

    A rank-r adapter on a layer (in -> out) adds r * (in + out): arithmetic on the architecture,
    not a call into the code under test.
    """
    d, depth = KWARGS["embed_dim"], KWARGS["depth"]
    per_block = rank * (d + 3 * d) + rank * (d + d)
    return depth * per_block + d * CLASSES + CLASSES


def run(rank: int, **over: Any) -> ListReporter:
    cfg: dict[str, Any] = {
        "trainable": "lora",
        "model": {"name": "vit_tiny_patch16_224", "img_size": 16, "kwargs": KWARGS},
        "dataset": {"name": "digits", "subset": 64},
        "optim": {"batch_size": 32, "epochs": 1, "max_train_batches": 1, "max_val_batches": 1},
        "lora": {"rank": rank, "alpha": 8, "dropout": 0.0, "target_modules": ["qkv", "proj"]},
        "precision": "fp32",
        "device": "cpu",
        "smoke": True,
        "profilers": {"latency": {"batch_sizes": [1], "warmup": 1, "repeats": 3}},
        **over,
    }
    reporter = ListReporter()
    lora.run(cfg, reporter)
    return reporter


def base_model() -> Any:
    return timm.create_model("vit_tiny_patch16_224", num_classes=CLASSES, img_size=16, **KWARGS)


def test_lora_trial_reports_counts_and_both_inference_profiles() -> None:
    reporter = run(4)
    last = reporter.trial_row()
    base_total = sum(p.numel() for p in base_model().parameters())
    assert last["params/trainable"] == trainable_by_hand(4)
    assert last["lora/adapter_params"] == trainable_by_hand(4) - trainable_by_hand(0)
    assert last["params/total"] == base_total + last["lora/adapter_params"]
    assert 0 < last["params/trainable_pct"] < 100
    assert last["lora/opt_state_saved_mb"] > 0
    # Merging gives back the base model: its parameter count, fewer MACs, the same outputs.
    assert last["merged/params/total"] == base_total
    assert last["merged/flops/fwd_gmacs"] < last["flops/fwd_gmacs"]
    assert last["lora/merge_max_abs_diff"] < 1e-4
    assert last["latency/b1_ms_p50"] > 0 and last["merged/latency/b1_ms_p50"] > 0
    tags = sorted({row["tag"] for row in reporter.tables["latency"]})
    assert tags == ["", "merged"]


def test_rank_zero_is_the_full_finetune_baseline() -> None:
    last = run(0).trial_row()
    assert last["params/trainable_pct"] == 100.0
    assert last["lora/adapter_params"] == 0 and last["lora/opt_state_saved_mb"] == 0
    assert "latency/b1_ms_p50" in last
    assert not any(k.startswith("merged/") for k in last)


def test_freeze_backbone_is_refused_with_the_key() -> None:
    with pytest.raises(ValueError, match=r"finetune\.freeze_backbone.*lora"):
        run(4, finetune={"freeze_backbone": True})
