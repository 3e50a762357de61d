"""Parameter counts and model size against hand arithmetic and timm's published figures."""

from __future__ import annotations

import timm
import torch
from torch import nn

from profilers.params import MIB, param_metrics


def test_linear_counts_by_hand() -> None:
    m = param_metrics(nn.Linear(10, 20))
    assert m["params/total"] == 10 * 20 + 20
    assert m["params/trainable"] == 220
    assert m["params/trainable_pct"] == 100.0
    assert m["model/size_mb"] == 220 * 4 / MIB
    assert m["model/size_mb_float32"] == m["model/size_mb"]


def test_frozen_buffers_dtypes_and_tied_weights() -> None:
    emb = nn.Embedding(50, 8)
    head = nn.Linear(8, 50, bias=False)
    head.weight = emb.weight  # tied: one tensor, counted once
    bn = nn.BatchNorm1d(8)
    model = nn.ModuleDict({"emb": emb, "head": head, "bn": bn, "small": nn.Linear(4, 4).half()})
    for p in bn.parameters():
        p.requires_grad_(False)
    m = param_metrics(model)
    assert m["params/total"] == 50 * 8 + 2 * 8 + 4 * 4 + 4
    assert m["params/trainable"] == 50 * 8 + 20
    assert abs(m["params/trainable_pct"] - 100 * 420 / 436) < 1e-9
    buffers_bytes = 8 * 4 * 2 + 8  # running mean/var fp32 + num_batches_tracked int64
    assert m["model/buffers_mb"] == buffers_bytes / MIB
    assert m["model/size_mb_float16"] == 20 * 2 / MIB
    assert m["model/size_mb_int64"] == 8 / MIB
    assert abs(m["model/size_mb"] - (m["model/params_mb"] + m["model/buffers_mb"])) < 1e-12


def test_empty_model_share_is_null_not_zero() -> None:
    assert param_metrics(nn.ReLU())["params/trainable_pct"] is None


def test_resnet18_matches_published_count() -> None:
    # timm publishes 11.69 M (11,689,512) with the 1000-class head; swap in a 10-class head by hand.
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    m = param_metrics(model)
    assert m["params/total"] == 11_689_512 - 512 * 1000 - 1000 + 512 * 10 + 10
    assert m["model/size_mb_float32"] > 0
    assert torch.float32 == next(model.parameters()).dtype
