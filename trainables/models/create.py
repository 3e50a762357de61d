"""Models by name: any timm model, `torchvision/<name>`, Hugging Face transformers classifiers
(`hf/<repo id>`, `hf:<path>`, see `trainables.models.hf`) and short aliases for the seeds' models.

`create_model(cfg, num_classes)` sizes the head to the dataset and passes `img_size` to models that
take it (ViT, DeiT, Swin); CNNs take any input size as they are. The ViT knobs of `ModelConfig`
(`patch_size`, `init_values`, the dropout rates) become timm constructor options;
`drop_path_schedule: constant` then gives every block timm's `DropPath` at the same rate, and
`attention` sets timm's own `fused_attn` switch on every attention module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from trainables.config import ModelConfig
from trainables.models.names import (
    TORCHVISION_PREFIX,
    check_model_name,
    default_attention,
    drop_path_schedule,
    is_hf,
    model_kwargs,
)


def create_model(
    cfg: ModelConfig, num_classes: int, *, dynamic_img_size: bool = False
) -> nn.Module:
    """Build the model of `cfg` with a `num_classes`-way head, weights as `cfg.pretrained` says.

    `dynamic_img_size`: build timm transformers with `dynamic_img_size=True` so the profilers can
    run them at other input sizes (the position embedding is resampled per forward; at the built
    size the forward is unchanged). Models whose constructor lacks the option ignore it.
    """
    check_model_name(cfg.name)
    name, kwargs = model_kwargs(cfg)
    local_weights = cfg.pretrained if isinstance(cfg.pretrained, str) else None
    use_hub = cfg.pretrained is True
    if is_hf(name):
        from trainables.models.hf import create_hf_model

        model = create_hf_model(name, num_classes, cfg.img_size, use_hub, kwargs)
    elif name.startswith(TORCHVISION_PREFIX):
        model = _create_torchvision(
            name.removeprefix(TORCHVISION_PREFIX), num_classes, use_hub, kwargs
        )
    else:
        model = _create_timm(name, num_classes, cfg.img_size, use_hub, kwargs, dynamic_img_size)
        if drop_path_schedule(cfg) == "constant":
            constant_drop_path(model, float(kwargs.get("drop_path_rate") or 0.0))
    if local_weights is not None:
        from trainables.models.checkpoints import load_backbone_weights

        load_backbone_weights(model, Path(local_weights))
    # `auto` is the model's own choice; for vit_optimized that is fused (seed 003).
    set_attention(model, cfg.attention if cfg.attention != "auto" else default_attention(cfg.name))
    return model


def has_attention_switch(model: nn.Module) -> bool:
    """Whether `model` has timm attention modules (their `fused_attn` flag picks the kernel)."""
    return any(hasattr(m, "fused_attn") for m in model.modules())


def set_attention(model: nn.Module, attention: str) -> int:
    """`model.attention`: fused SDPA or the plain path on every timm attention module.

    Returns how many modules were set. `auto` keeps timm's choice; a model without timm attention
    modules is left alone (the trial's `env/attention` fact says the switch had no effect).
    """
    if attention == "auto":
        return 0
    modules = [m for m in model.modules() if hasattr(m, "fused_attn")]
    for m in modules:
        m.fused_attn = attention == "fused"
    return len(modules)


def _create_timm(
    name: str,
    num_classes: int,
    img_size: int,
    pretrained: bool,
    kwargs: dict[str, Any],
    dynamic_img_size: bool,
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

    # Transformers bake the token grid into the position embedding: they need img_size. A
    # constructor that takes neither option (CNNs) is not given it.
    extra: dict[str, Any] = {}
    if "img_size" not in kwargs and takes_option(name, "img_size"):
        extra["img_size"] = img_size
    if (
        dynamic_img_size
        and "dynamic_img_size" not in kwargs
        and takes_option(name, "dynamic_img_size")
    ):
        extra["dynamic_img_size"] = True
    return build(**extra)


def takes_option(name: str, option: str) -> bool:
    """Whether timm model `name`'s class takes the constructor option `option` (`img_size`,
    `dynamic_img_size`): read from the signatures of the model classes in the module of its
    entrypoint; where timm builds it from a class of another module, from its pretrained cfg
    (`fixed_input_size`: the transformers whose token grid needs the size)."""
    import inspect
    import sys

    from timm.models import get_pretrained_cfg, model_entrypoint

    module = sys.modules[model_entrypoint(name).__module__]
    classes = [
        c
        for c in vars(module).values()
        if isinstance(c, type)
        and issubclass(c, nn.Module)
        and c.__module__ == module.__name__
        and _init_takes(c, "num_classes", inspect)
    ]
    if classes:
        return all(_init_takes(c, option, inspect) for c in classes)
    cfg = get_pretrained_cfg(name)
    return bool(cfg is not None and cfg.fixed_input_size)


def _init_takes(cls: type, option: str, inspect: Any) -> bool:
    """`option` in the signature of `cls.__init__`, following `**kwargs` up to the base class."""
    for klass in cls.__mro__:
        if klass is nn.Module or "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        if option in params:
            return True
        if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return False
    return False


def constant_drop_path(model: nn.Module, rate: float) -> int:
    """Give every timm ViT block's residual branches `timm.layers.DropPath(rate)` (timm ramps the
    rate linearly from 0 over the depth; seed 003 drops every block alike). Returns the blocks set."""
    from timm.layers import DropPath

    blocks = 0
    for module in model.modules():
        for attr in ("drop_path1", "drop_path2", "drop_path"):
            if hasattr(module, attr) and isinstance(getattr(module, attr), (DropPath, nn.Identity)):
                setattr(module, attr, DropPath(rate) if rate > 0 else nn.Identity())
                blocks += attr != "drop_path2"
    if not blocks:
        raise ValueError(
            f"model.drop_path_schedule: constant found no DropPath slot in {type(model).__name__}"
        )
    return blocks


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
