"""Run a built model at another input size without rebuilding it.

CNNs take any size. timm's ViTs and Swins check the size they were built for unless built with
`dynamic_img_size=True`; that switch only changes how the forward treats the size (ViT resamples its
position embedding on the fly, Swin builds its window masks per forward), so `dynamic_input_size`
sets the same flags the constructor would set, for the duration of a measurement, and puts them
back. The weights are never touched; at the built size the forward computes the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn


def _unwrap(model: nn.Module) -> nn.Module:
    # torch.compile wraps in `_orig_mod`, DDP in `module`, peft in `base_model.model`.
    while True:
        for attr in ("_orig_mod", "module"):
            inner = getattr(model, attr, None)
            if isinstance(inner, nn.Module):
                model = inner
                break
        else:
            base = getattr(model, "base_model", None)
            inner = getattr(base, "model", None) if base is not None else None
            if isinstance(inner, nn.Module) and inner is not model:
                model = inner
                continue
            return model


def native_input_size(model: nn.Module) -> int | None:
    """The side length a timm model was built for (None when it takes any size)."""
    inner = _unwrap(model)
    embed = getattr(inner, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if size is None:
        return None
    return int(size[0]) if isinstance(size, tuple | list) else int(size)


@contextmanager
def dynamic_input_size(model: nn.Module) -> Iterator[nn.Module]:
    """Let a timm ViT/DeiT/Swin accept any input size (a multiple of its patch) inside the block."""
    inner = _unwrap(model)
    saved: list[tuple[Any, str, Any]] = []

    def set_attr(obj: Any, name: str, value: Any) -> None:
        saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    embed = getattr(inner, "patch_embed", None)
    if (
        embed is not None
        and getattr(inner, "dynamic_img_size", None) is False
        and hasattr(embed, "strict_img_size")
    ):
        from timm.layers import Format
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.vision_transformer import VisionTransformer

        if isinstance(inner, VisionTransformer):
            # What VisionTransformer.__init__ does for dynamic_img_size=True: keep the patch grid
            # (NHWC) so _pos_embed can resample the position embedding to it.
            set_attr(inner, "dynamic_img_size", True)
            set_attr(embed, "strict_img_size", False)
            set_attr(embed, "flatten", False)
            set_attr(embed, "output_fmt", Format.NHWC)
        elif isinstance(inner, SwinTransformer):
            set_attr(inner, "dynamic_img_size", True)
            set_attr(embed, "strict_img_size", False)
            for module in inner.modules():
                if hasattr(module, "dynamic_mask"):
                    set_attr(module, "dynamic_mask", True)
    try:
        yield model
    finally:
        for obj, name, value in reversed(saved):
            setattr(obj, name, value)
