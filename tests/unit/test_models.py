"""Models by name: aliases, timm, torchvision; heads sized to the dataset; unknown names explained."""

from __future__ import annotations

import pytest
import torch

from trainables.config import ModelConfig
from trainables.models.create import create_model
from trainables.models.names import ALIASES, UnknownModelError, check_model_name


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_every_alias_resolves_to_a_timm_model(alias: str) -> None:
    check_model_name(alias)
    check_model_name(ALIASES[alias][0])


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


def test_constructor_options_are_read_from_the_model_class() -> None:
    """img_size goes to the transformers that take it, never to a CNN (no TypeError matching)."""
    from trainables.models.create import takes_option

    assert takes_option("vit_tiny_patch16_224", "img_size")
    assert takes_option("vit_tiny_patch16_224", "dynamic_img_size")
    assert not takes_option("resnet10t", "img_size")
    # Built from a class of another timm module: timm's pretrained cfg decides.
    assert takes_option("vit_tiny_r_s16_p8_224", "dynamic_img_size")
