"""The classifier head of a model: which modules it is, freezing everything else.

Fine-tuning, LoRA and checkpoint hand-off all need the same answer to "which layers are the
head": the head is re-created when the number of classes changes, stays trainable under LoRA and
is the only trainable part when the backbone is frozen.
"""

from __future__ import annotations

from torch import nn


def unwrap(model: nn.Module, *, peft: bool = True, drop_precision_hooks: bool = False) -> nn.Module:
    """The model under its wrappers: DDP/DataParallel and torch.compile (Accelerate's
    `extract_model_from_parallel`), then peft's (`get_base_model`) unless `peft=False` (a
    checkpoint keeps its adapters).

    `drop_precision_hooks` also removes the autocast wrapper `Accelerator.prepare` put on the
    forward, in place: only once training is over, or later epochs would lose mixed precision.
    """
    from accelerate.utils import extract_model_from_parallel

    model = extract_model_from_parallel(
        model, keep_fp32_wrapper=not drop_precision_hooks, keep_torch_compile=False
    )
    if peft:
        get_base = getattr(model, "get_base_model", None)
        if callable(get_base):
            model = get_base()
    return model


def plain_model(model: nn.Module) -> nn.Module:
    """The user's model without any wrapper (see `unwrap`)."""
    return unwrap(model, peft=True)


def classifier_names(model: nn.Module) -> list[str]:
    """Dotted names of the classifier module(s) of `model` (a peft wrapper is looked through).

    timm declares its head in `pretrained_cfg["classifier"]` (a name or a tuple for distilled
    models); for anything else (torchvision) the head is the last `nn.Linear` registered, which
    holds for resnet (`fc`), vit (`heads.head`), swin (`head`) and efficientnet (`classifier.1`).
    """
    base = plain_model(model)
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
    base = plain_model(model)
    prefixes = tuple(f"{n}." for n in classifier_names(base))
    return {n for n, _ in base.named_parameters() if n.startswith(prefixes)}


def is_head_key(key: str, heads: list[str]) -> bool:
    """Whether a state-dict key belongs to one of the head modules `heads`."""
    return any(key.startswith(f"{h}.") for h in heads)


def set_head_trainable(model: nn.Module) -> None:
    """Give the head's parameters requires_grad=True, leaving all others as they are."""
    base = plain_model(model)
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
