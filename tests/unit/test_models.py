"""Models by name: aliases, timm, torchvision; heads sized to the dataset; unknown names explained."""

from __future__ import annotations

import pytest
import torch

from trainables.config import ModelConfig
from trainables.models.create import create_model
from trainables.models.names import ALIASES, UnknownModelError, check_model_name


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_resolves_to_a_timm_model(alias: str) -> None:
    # check_model_name(alias) returns at the alias table: the timm name it builds is the check.
    check_model_name(ALIASES[alias].timm_name)


def _built_geometry(timm_name: str) -> tuple[int | None, int | None]:
    """(pixels per token side, Swin window) of the model timm builds, on the meta device."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(timm_name.split(".")[0], pretrained=False)
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        return None, None
    window = None
    if hasattr(model, "layers") and hasattr(model.layers[0], "blocks"):
        window = model.layers[0].blocks[0].window_size[0]
    return embed.img_size[0] // embed.grid_size[0], window


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_declares_the_geometry_timm_builds(alias: str) -> None:
    a = ALIASES[alias]
    stride, window = _built_geometry(a.timm_name)
    assert (a.stride, a.window) == (stride, window), f"{alias} -> {a.timm_name}"


@pytest.mark.parametrize("name", ["vit_ti_r", "vit_tiny_r_s16_p8_224"])
def test_a_hybrid_size_timm_rejects_fails_validation(name: str) -> None:
    import timm

    from orchestrator.driver.schema import SweepError, validate_sweep_dict

    with pytest.raises(AssertionError):  # timm: the stem's feature map is not whole patches
        timm.create_model("vit_tiny_r_s16_p8_224", img_size=48, num_classes=2)
    with pytest.raises(
        SweepError, match=r"model\.img_size: 48 is not divisible by the stem stride 32"
    ):
        validate_sweep_dict({"name": "t", "model": {"name": name, "img_size": 48}})
    validate_sweep_dict({"name": "t", "model": {"name": name, "img_size": 64}})


def test_vit_gets_img_size_and_head() -> None:
    cfg = ModelConfig(
        name="vit_tiny_patch16_224", img_size=32, kwargs={"patch_size": 8, "depth": 2}
    )
    model = create_model(cfg, num_classes=7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_cnn_ignores_img_size() -> None:
    model = create_model(ModelConfig(name="resnet18", img_size=48), num_classes=3)
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, 3)


def test_torchvision_prefix() -> None:
    model = create_model(ModelConfig(name="torchvision/resnet18"), num_classes=5)
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_unknown_names_suggest() -> None:
    with pytest.raises(UnknownModelError, match="did you mean"):
        check_model_name("vit_tiny_patch16_22")
    with pytest.raises(UnknownModelError, match="torchvision"):
        check_model_name("torchvision/resnet1800")
