"""Model names a sweep file may use: timm names (with an optional pretrained tag),
`torchvision/<name>`, and short aliases for the seeds' models. Checking a name imports timm or
torchvision only when it is not an alias; building a model lives in `trainables.models`.
"""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

TORCHVISION_PREFIX = "torchvision/"

# The seeds' models: alias -> (timm name, constructor kwargs). Base sizes, as the studies used.
ALIASES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("vit_base_patch16_224", {}),
    "deit": ("deit_base_patch16_224", {}),
    "swin": ("swin_base_patch4_window7_224", {}),
    "resnet": ("resnet50", {}),
    "efficientnet_b0": ("efficientnet_b0", {}),
    # BiT-M-R50x1 of seed 003.
    "bit": ("resnetv2_50x1_bit", {}),
    # ViT-B/16 on a ResNet-50 stem: the seed's "ViT(B)-Hyb".
    "hybrid": ("vit_base_r50_s16_224", {}),
    # Seed 003's ViTOptimized: LayerScale (init 1e-5), fused (flash) attention, DropPath 0.1.
    "vit_optimized": ("vit_base_patch16_224", {"init_values": 1e-5, "drop_path_rate": 0.1}),
}


class UnknownModelError(ValueError):
    pass


@cache
def _timm_names() -> frozenset[str]:
    import timm

    return frozenset(timm.list_models())


@cache
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models())


def check_model_name(name: str) -> None:
    """Raise UnknownModelError, with close matches, unless `name` resolves to a model."""
    if name in ALIASES:
        return
    if name.startswith(TORCHVISION_PREFIX):
        arch = name.removeprefix(TORCHVISION_PREFIX)
        known = _torchvision_names()
        if arch in known:
            return
        close = difflib.get_close_matches(arch, sorted(known), n=3)
        hint = (
            f"; did you mean {', '.join(TORCHVISION_PREFIX + c for c in close)}?" if close else ""
        )
        raise UnknownModelError(f"unknown torchvision model {arch!r}{hint}")
    from timm.models import split_model_name_tag

    # timm names may carry a pretrained tag: "vit_base_patch16_224.augreg_in21k".
    arch, _ = split_model_name_tag(name)
    if arch in _timm_names():
        return
    close = difflib.get_close_matches(arch, sorted(_timm_names() | set(ALIASES)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} (accepted: any timm model name, "
        f"'torchvision/<name>', or an alias: {', '.join(ALIASES)})"
    )


def resolve(name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Alias -> (real name, kwargs); the user's kwargs win over the alias's."""
    if name in ALIASES:
        real, alias_kwargs = ALIASES[name]
        return real, {**alias_kwargs, **kwargs}
    return name, dict(kwargs)
