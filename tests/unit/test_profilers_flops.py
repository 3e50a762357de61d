"""FLOPs/MACs: hand arithmetic on tiny modules, attention counted, growth with input size,
published figures (slow)."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from profilers.flops import count_flops, fvcore_macs, torch_flops

PATCH, DIM, DEPTH, HEADS = 8, 32, 2, 2


def tiny_vit(**kw: object) -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=32,
        patch_size=PATCH,
        embed_dim=DIM,
        depth=DEPTH,
        num_heads=HEADS,
        **kw,
    )


def tokens(side: int) -> int:
    return (side // PATCH) ** 2 + 1  # patches + class token


class Flat(nn.Module):
    """An image model made of two linear layers: every count is one line of arithmetic."""

    def __init__(self, side: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3 * side * side, hidden)
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def test_linear_and_conv_by_hand() -> None:
    a, b, c = 3 * 8 * 8, 16, 10
    row = count_flops(Flat(8, b, c), 8)
    assert row["status"] == "ok"
    assert row["fwd_gmacs"] * 1e9 == a * b + b * c
    assert row["fwd_gflops"] * 1e9 == 2 * (a * b + b * c)
    # backward: weight grads of both layers + the input grad of fc2 (fc1's input needs none)
    assert row["train_step_gflops"] * 1e9 == 2 * (a * b + b * c) + 2 * (a * b + 2 * b * c)
    assert row["input_shape"] == "1x3x8x8"
    assert "fvcore" in row["counter"] and "FlopCounterMode" in row["counter"]

    conv = nn.Conv2d(3, 4, kernel_size=3, padding=1, bias=False)
    assert count_flops(conv, 8)["fwd_gmacs"] * 1e9 == 8 * 8 * 4 * 3 * 3 * 3


def test_train_step_skips_frozen_weight_gradients() -> None:
    a, b, c = 3 * 8 * 8, 16, 10
    model = Flat(8, b, c)
    model.fc1.requires_grad_(False)
    row = count_flops(model, 8)
    # fc1 frozen: its output needs no gradient, so the backward is fc2's weight gradient alone
    assert row["train_step_gflops"] * 1e9 == 2 * (a * b + b * c) + 2 * b * c


def test_unsupported_ops_are_listed_not_hidden() -> None:
    row = count_flops(tiny_vit(), 32)
    assert "aten::gelu" in row["unsupported_ops"]
    assert "aten::scaled_dot_product_attention" not in row["unsupported_ops"]


def test_fused_attention_is_counted_like_explicit_attention() -> None:
    model = tiny_vit().eval()
    x = torch.randn(1, 3, 32, 32)
    fused, _ = fvcore_macs(model, x)
    attn = [m for m in model.modules() if hasattr(m, "fused_attn")]
    assert len(attn) == DEPTH and all(m.fused_attn for m in attn)

    # by hand: per block q@k^T and attn@v, each tokens^2 x dim MACs over all heads
    from fvcore.nn import FlopCountAnalysis

    bare = FlopCountAnalysis(model, x).unsupported_ops_warnings(False).total()
    n = tokens(32)
    assert fused - bare == DEPTH * 2 * n * n * DIM

    for m in attn:
        m.fused_attn = False  # timm's explicit q @ k^T, softmax, @ v
    explicit, _ = fvcore_macs(model, x)
    assert explicit == fused
    # torch's counter sees the same attention, fused (CPU kernel formula) and explicit
    for m in attn:
        m.fused_attn = True
    torch_fused = torch_flops(model, x, backward=False)
    for m in attn:
        m.fused_attn = False
    assert torch_flops(model, x, backward=False) == torch_fused


def test_resnet_macs_grow_with_the_square_of_the_side() -> None:
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    r32, r64 = (count_flops(model, s, train_step=False) for s in (32, 64))
    # every conv scales with H*W; only the classifier (512 x 10 MACs) does not
    head = 512 * 10 / 1e9
    assert abs((r64["fwd_gmacs"] - head) / (r32["fwd_gmacs"] - head) - 4) < 1e-3
    # the counters agree up to the BatchNorm/pooling MACs only fvcore counts
    assert 0.95 < r32["crosscheck_ratio"] <= 1.0


def test_vit_macs_have_a_term_in_tokens_squared() -> None:
    model = tiny_vit(dynamic_img_size=True)  # built to run at other sizes than 32
    sizes = (32, 64, 96)
    macs = {s: count_flops(model, s, train_step=False)["fwd_gmacs"] * 1e9 for s in sizes}
    attention = {s: DEPTH * 2 * tokens(s) ** 2 * DIM for s in sizes}
    # without the attention term the rest is affine in the token count
    rest = {s: macs[s] - attention[s] for s in sizes}
    slope1 = (rest[64] - rest[32]) / (tokens(64) - tokens(32))
    slope2 = (rest[96] - rest[64]) / (tokens(96) - tokens(64))
    assert abs(slope1 - slope2) < 1e-6 * slope1
    # and the quadratic term is really there: MACs per token grow with the token count
    assert macs[96] / tokens(96) > macs[64] / tokens(64) > macs[32] / tokens(32)


def test_a_size_the_model_cannot_take_is_an_error_row_not_zero() -> None:
    row = count_flops(tiny_vit(dynamic_img_size=True), 36)  # not a multiple of the patch
    assert row["status"] == "error"
    assert row["fwd_gmacs"] is None and row["fwd_gflops"] is None
    assert "36" in row["error"] or "divisible" in row["error"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "gmacs", "mparams"),
    [
        ("resnet50", 4.11, 25.56),
        ("vit_base_patch16_224", 17.58, 86.57),
        ("deit_small_patch16_224", 4.61, 22.05),
        ("swin_tiny_patch4_window7_224", 4.51, 28.29),
    ],
)
def test_published_figures(name: str, gmacs: float, mparams: float) -> None:
    from profilers.params import param_metrics

    model = timm.create_model(name, pretrained=False)
    row = count_flops(model, 224, train_step=False)
    assert abs(row["fwd_gmacs"] / gmacs - 1) < 0.02, row["fwd_gmacs"]
    assert abs(param_metrics(model)["params/total"] / 1e6 / mparams - 1) < 0.02
