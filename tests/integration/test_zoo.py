"""The model zoo: every seed alias builds small and trains a step; bad sizes fail at validation,
naming the key; the optimized ViT equals the plain one when its extras are neutral; `models` lists
names with params and GMACs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import timm
import torch

from orchestrator.cli import main as cli_main
from orchestrator.driver.schema import SweepError, validate_sweep_dict
from profilers.flops import count_flops
from trainables.config import ModelConfig
from trainables.models.create import create_model
from trainables.models.names import ALIASES, family

SLOW = {"bit_s_r152x2"}  # 236 M parameters: cannot be cut down through timm's constructor


def small(alias: str) -> dict[str, Any]:
    """The alias at 32 px, cut to one block where its constructor allows it."""
    fam = ALIASES[alias].family
    if fam in ("ViT", "DeiT", "ViT-optimized", "Hybrid"):
        return {"depth": 1}
    if fam == "Swin":
        return {"depths": (1, 1, 1, 1), "window_size": 4}
    return {}


# One alias per distinct model (vit = vit_b16, bit = bit_m_r50x1, hybrid = vit_b_r50).
DISTINCT = sorted(
    {(a.timm_name, repr(a.kwargs), a.drop_path): n for n, a in ALIASES.items()}.values()
)


@pytest.mark.parametrize(
    "alias", [pytest.param(a, marks=pytest.mark.slow) if a in SLOW else a for a in DISTINCT]
)
def test_every_alias_builds_small_and_steps(alias: str) -> None:
    cfg = ModelConfig(name=alias, img_size=32, kwargs=small(alias))
    model = create_model(cfg, num_classes=4)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    ("model", "key"),
    [
        (
            {"name": "vit_b16", "img_size": 40},
            "model.img_size: 40 is not divisible by the patch 16",
        ),
        ({"name": "vit_b16", "img_size": 32, "patch_size": 3}, "patch 3"),
        ({"name": "swin_t", "img_size": 32}, "model.kwargs.window_size: window 7 does not fit"),
        ({"name": "vit_b_r50", "img_size": 40}, "stem stride 16"),
        (
            {"name": "vit_b_r50", "img_size": 32, "patch_size": 8},
            "model.patch_size: 8 does not apply",
        ),
        ({"name": "resnet", "init_values": 0.1}, "model.init_values"),
        ({"name": "resnet", "drop_path_schedule": "constant"}, "model.drop_path_schedule"),
    ],
)
def test_bad_combinations_fail_at_validation(model: dict[str, Any], key: str) -> None:
    with pytest.raises(SweepError, match=key.replace(".", r"\.")):
        validate_sweep_dict({"name": "t", "model": model})
    # The same in a search grid: each listed value is validated before Ray starts.
    with pytest.raises(SweepError, match=r"search\.model\.grid\[1\]"):
        validate_sweep_dict(
            {"name": "t", "search": {"model": {"grid": [{"name": "vit_ti16"}, model]}}}
        )


def test_patch_size_knob_changes_the_tokens() -> None:
    cfg = ModelConfig(name="vit_ti16", img_size=32, patch_size=8, kwargs={"depth": 1})
    model = create_model(cfg, num_classes=3)
    assert model.patch_embed.patch_size == (8, 8) and model.patch_embed.num_patches == 16
    swin = create_model(
        ModelConfig(
            name="swin_t",
            img_size=32,
            patch_size=2,
            kwargs={"window_size": 4, "depths": (1, 1, 1, 1)},
        ),
        num_classes=3,
    )
    assert swin.patch_embed.patch_size == (2, 2)


def vit(name: str, **knobs: Any) -> torch.nn.Module:
    cfg = ModelConfig(name=name, img_size=32, patch_size=8, kwargs={"depth": 2}, **knobs)
    return create_model(cfg, num_classes=5)


def test_optimized_is_timm_vit_with_its_options() -> None:
    model = vit("vit_optimized_ti16")
    blocks = list(model.blocks)
    assert all(b.attn.fused_attn for b in blocks)  # fused SDPA
    assert all(torch.allclose(b.ls1.gamma, torch.full_like(b.ls1.gamma, 1e-5)) for b in blocks)
    # Constant DropPath: 0.1 in every block (timm's own schedule would ramp 0 -> 0.1).
    assert [b.drop_path1.drop_prob for b in blocks] == [0.1, 0.1]
    assert blocks[0].attn.attn_drop.p == 0.1 and blocks[0].mlp.drop1.p == 0.1
    ramp = vit("vit_optimized_ti16", drop_path_schedule="linear")
    assert isinstance(ramp.blocks[0].drop_path1, torch.nn.Identity)  # timm's ramp starts at 0
    assert vit("vit_optimized_ti16", attention="plain").blocks[0].attn.fused_attn is False


def test_optimized_equals_plain_when_its_extras_are_neutral() -> None:
    plain = vit("vit_ti16", attention="plain").eval()
    neutral = vit(
        "vit_optimized_ti16",
        init_values=1.0,
        drop_path_rate=0.0,
        attn_drop_rate=0.0,
        proj_drop_rate=0.0,
    ).eval()
    missing, unexpected = neutral.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.endswith("gamma") for k in missing)
    assert neutral.blocks[0].attn.fused_attn and not plain.blocks[0].attn.fused_attn
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(neutral(x), plain(x), atol=1e-5)
    # ...and the counted work is the same: fused attention is counted as the matmuls it fuses.
    a, b = count_flops(plain, 32, train_step=False), count_flops(neutral, 32, train_step=False)
    assert a["fwd_gmacs"] == pytest.approx(b["fwd_gmacs"], rel=1e-3)


def test_families_group_the_seed_models() -> None:
    assert family("vit_b16") == family("vit_base_patch32_224") == "ViT"
    assert family("bit_s_r152x2") == family("resnetv2_50x1_bit") == "BiT"
    assert family("vit_ti_r") == family("vit_base_r50_s16_384") == "Hybrid"
    assert family("hf/google/vit-base-patch16-224") == "HF"


def test_models_command_lists_with_params_and_gmacs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli_main(["models", "vit_tiny_patch16", "--json", "--limit", "1"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    timm_vit = timm.create_model("vit_tiny_patch16_224")
    assert rows["vit_ti16"]["params"] == sum(p.numel() for p in timm_vit.parameters())
    assert rows["vit_ti16"]["gmacs"] == pytest.approx(
        count_flops(timm_vit, 224, train_step=False)["fwd_gmacs"], rel=1e-3
    )
    assert rows["vit_tiny_patch16_224"]["kind"] == "timm"
    assert rows["vit_tiny_patch16_224"]["gmacs"] == rows["vit_ti16"]["gmacs"]
    skipped = [r for r in rows.values() if r["figures"].startswith("beyond")]
    assert all(r["params"] is None for r in skipped)  # listed, not counted, and said so
    assert (tmp_path / "lvmbench" / "model_figures.json").is_file()  # the next run is instant


def test_report_draws_seed_003_figures() -> None:
    import pandas as pd

    from orchestrator.report import plots

    models = [("vit_b16", 224), ("vit_b16", 32), ("bit_m_r50x1", 32), ("vit_ti_r", 32)]
    view = pd.DataFrame(
        {
            "sweep": "s",
            "trial_id": [f"t{i}" for i in range(4)],
            "label": [f"{n}@{s}" for n, s in models],
            "model.name": [n for n, _ in models],
            "model.img_size": [s for _, s in models],
            "mem/cpu_peak_rss_mb": [900.0, 500.0, 400.0, 300.0],
        }
    )
    epochs = pd.DataFrame(
        [
            {
                "sweep": "s",
                "trial_id": f"t{i}",
                "epoch": e,
                "val/acc": 0.1 * e,
                "val/f1_macro": 0.1,
                "val/loss": 2.0 - e / 10,
            }
            for i in range(4)
            for e in (1, 2)
        ]
    )
    palette = plots.Palette(list(view["label"]))
    curves = plots.family_curves(epochs, view, palette)
    assert curves is not None and curves.png.startswith(b"\x89PNG")
    memory = plots.memory_by_size(view, palette)
    assert memory is not None and "CPU RSS" in memory.caption
    # One family only: the per-family figure has nothing to compare and is left out.
    assert plots.family_curves(epochs, view.iloc[:2], palette) is None
