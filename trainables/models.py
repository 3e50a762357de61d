"""Models by name: any timm model, `torchvision/<name>`, and short aliases for the seeds' models.

`create_model(cfg, num_classes)` sizes the head to the dataset and passes `img_size` to models that
take it (ViT, DeiT, Swin); CNNs take any input size as they are.
"""

from __future__ import annotations

import difflib
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

if TYPE_CHECKING:
    from trainables.trial_config import ModelConfig

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
    # timm names may carry a pretrained tag: "vit_base_patch16_224.augreg_in21k".
    arch = name.split(".", 1)[0]
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


def create_model(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """Build the model of `cfg` with a `num_classes`-way head, weights as `cfg.pretrained` says."""
    check_model_name(cfg.name)
    name, kwargs = resolve(cfg.name, cfg.kwargs)
    local_weights = cfg.pretrained if isinstance(cfg.pretrained, str) else None
    use_hub = cfg.pretrained is True
    if name.startswith(TORCHVISION_PREFIX):
        model = _create_torchvision(
            name.removeprefix(TORCHVISION_PREFIX), num_classes, use_hub, kwargs
        )
    else:
        model = _create_timm(name, num_classes, cfg.img_size, use_hub, kwargs)
    if local_weights is not None:
        from trainables.checkpoints import load_backbone_weights

        load_backbone_weights(model, Path(local_weights))
    return model


def _create_timm(
    name: str, num_classes: int, img_size: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    import timm

    def build(**extra: Any) -> nn.Module:
        try:
            return timm.create_model(
                name, pretrained=pretrained, num_classes=num_classes, **kwargs, **extra
            )
        except (OSError, RuntimeError) as err:
            if pretrained and _looks_offline(err):
                raise RuntimeError(
                    f"model.pretrained: could not download weights for {name!r} ({err.__class__.__name__}:"
                    f" {err}). The hub is unreachable: set `pretrained: false`, point `pretrained` at a"
                    " local checkpoint file, or pass --no-pretrained to run without weights."
                ) from err
            raise

    try:
        # Transformers bake the token grid into the position embedding: they need img_size.
        return build(img_size=img_size)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
        return build()


def _looks_offline(err: BaseException) -> bool:
    text = f"{err.__class__.__name__} {err} {err.__cause__!r}".lower()
    return any(
        s in text
        for s in ("connect", "offline", "resolve", "network", "timed out", "max retries", "hub")
    )


def _create_torchvision(
    arch: str, num_classes: int, pretrained: bool, kwargs: dict[str, Any]
) -> nn.Module:
    import torchvision

    if not pretrained:
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT", **kwargs)
    except (OSError, RuntimeError) as err:
        raise RuntimeError(
            f"model.pretrained: could not download torchvision weights for {arch!r} ({err}). Set "
            "`pretrained: false`, point `pretrained` at a local checkpoint, or pass --no-pretrained."
        ) from err
    _replace_torchvision_head(model, num_classes)
    return model


def _replace_torchvision_head(model: nn.Module, num_classes: int) -> None:
    for attr in ("fc", "head", "heads", "classifier"):
        head = getattr(model, attr, None)
        if head is None:
            continue
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return
        if isinstance(head, nn.Sequential):
            for i in range(len(head) - 1, -1, -1):
                if isinstance(head[i], nn.Linear):
                    head[i] = nn.Linear(head[i].in_features, num_classes)
                    return
    raise RuntimeError(
        f"cannot find the classifier of torchvision model {type(model).__name__} to resize it"
    )
