"""The classifier head of a model: which modules it is, freezing everything else.

Fine-tuning, LoRA and checkpoint hand-off all need the same answer to "which layers are the
head": the head is re-created when the number of classes changes, stays trainable under LoRA and
is the only trainable part when the backbone is frozen.
"""

from __future__ import annotations

from torch import nn


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The plain model under a peft wrapper (the model itself when there is none)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def classifier_names(model: nn.Module) -> list[str]:
    """Dotted names of the classifier module(s) of `model` (a peft wrapper is looked through).

    timm declares its head in `pretrained_cfg["classifier"]` (a name or a tuple for distilled
    models); for anything else (torchvision) the head is the last `nn.Linear` registered, which
    holds for resnet (`fc`), vit (`heads.head`), swin (`head`) and efficientnet (`classifier.1`).
    """
    base = unwrap_peft(model)
    declared = (getattr(base, "pretrained_cfg", None) or {}).get("classifier")
    if declared:
        names = [declared] if isinstance(declared, str) else list(declared)
        present = [n for n in names if _has_module(base, n)]
        if present:
            return present
    linears = [n for n, m in base.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"cannot find the classifier head of {type(base).__name__}: no "
            "pretrained_cfg['classifier'] and no nn.Linear layer"
        )
    return [linears[-1]]


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names (as in `model.named_parameters()`) of the head's parameters."""
    base = unwrap_peft(model)
    prefixes = tuple(f"{n}." for n in classifier_names(base))
    return {n for n, _ in base.named_parameters() if n.startswith(prefixes)}


def is_head_key(key: str, heads: list[str]) -> bool:
    """Whether a state-dict key belongs to one of the head modules `heads`."""
    return any(key.startswith(f"{h}.") for h in heads)


def set_head_trainable(model: nn.Module) -> None:
    """Give the head's parameters requires_grad=True, leaving all others as they are."""
    base = unwrap_peft(model)
    for name in classifier_names(base):
        for p in base.get_submodule(name).parameters():
            p.requires_grad_(True)


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head: every parameter outside it gets requires_grad=False."""
    for p in model.parameters():
        p.requires_grad_(False)
    set_head_trainable(model)


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True
