"""LoRA adapters on timm, torchvision and transformers models through peft: apply, count, merge, cost.

`apply_lora(model, cfg)` puts peft LoRA adapters on the layers named by `lora.target_modules` (a
layer is targeted when its dotted name equals a target or ends in `.<target>`, peft's own rule) and
keeps the classifier head fully trainable; rank 0 adds no adapters and trains every parameter, the
full fine-tune baseline of a rank sweep.

- Targets: `nn.Linear` layers, and `nn.Conv2d` layers (groups = 1) so CNNs (ResNet, EfficientNet,
  BiT) can be LoRA-tuned. A ViT's patch embedding `patch_embed.proj` is a Conv2d that the target
  `proj` would also catch; it is adapted only when named in full (`patch_embed.proj`), since nobody
  means it by "attention projection". Grouped (depthwise) convolutions are left out: peft cannot
  merge their adapters.
- `target_modules: all-linear` is peft's own value (every linear layer; the head is passed to
  peft's `exclude_modules`); None takes the model's default (`DEFAULT_TARGETS`, or a transformers
  model's query/value projections, `trainables.models.hf`).
- `lora.variant`: `lora`, `rslora` (peft `use_rslora`: scale alpha / sqrt(r)) or `dora` (peft
  `use_dora`: a learned magnitude per output of each adapted layer).

Keys of `lora_metrics`:

| key                      | unit  | meaning                                                        |
|--------------------------|-------|----------------------------------------------------------------|
| params/total             | count | parameters of the model as trained (base + adapters)           |
| params/trainable         | count | parameters with requires_grad (adapters + head; all at rank 0) |
| params/trainable_pct     | %     | 100 * trainable / total                                        |
| lora/adapter_params      | count | parameters of the LoRA A and B matrices                        |
| lora/adapted_modules     | count | linear layers that carry an adapter                            |
| lora/opt_state_mb        | MiB   | optimizer state for the trainable parameters (estimate)        |
| lora/opt_state_full_mb   | MiB   | the same for a full fine-tune of the base model (estimate)     |
| lora/opt_state_saved_mb  | MiB   | full minus this run: the optimizer memory LoRA saves           |

The optimizer-state figures come from `optimizer_state_bytes_per_param`: one step of the configured
optimizer on a small probe tensor, its state tensors' bytes divided by the probe's elements (AdamW:
8 bytes, two fp32 moments; SGD with momentum: 4). For factored optimizers (Adafactor) that is an
upper bound. They are None with a reason in `lora/opt_state_error` when the optimizer cannot be
probed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from profilers.memory import MIB
from profilers.metric_registry import INT, F, S, declare
from trainables.models.heads import classifier_names, is_head_key, plain_model, set_head_trainable

declare(
    __name__,
    {
        "lora/adapter_params": (INT, "count", "parameters of the LoRA A and B matrices"),
        "lora/adapted_modules": (INT, "count", "layers that carry an adapter"),
        "lora/opt_state_mb": (F, "MiB", "optimizer state for the trainable parameters (estimate)"),
        "lora/opt_state_full_mb": (F, "MiB", "the same for a full fine-tune of the base model"),
        "lora/opt_state_saved_mb": (
            F,
            "MiB",
            "full minus this run: the optimizer memory LoRA saves",
        ),
        "lora/opt_state_error": (S, "", "why the optimizer state could not be probed"),
    },
)


if TYPE_CHECKING:
    from trainables.config import LoraConfig, OptimConfig


DEFAULT_TARGETS = ["qkv", "proj"]
ALL_LINEAR = "all-linear"
# timm ViTs' patch embedding: a Conv2d whose name ends in `proj`; adapted only when named in full.
PATCH_EMBED = "patch_embed.proj"


def default_targets(model: nn.Module) -> list[str]:
    """`lora.target_modules: null`: the model's own default (transformers: query/value)."""
    base = plain_model(model)
    own = getattr(base, "lora_targets", None)
    return list(own) if own else list(DEFAULT_TARGETS)


def _adaptable(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, nn.Conv2d) and module.groups == 1


def _selected(name: str, module: nn.Module, targets: list[str]) -> bool:
    if not any(name == t or name.endswith(f".{t}") for t in targets):
        return False
    if isinstance(module, nn.Conv2d) and name.endswith(PATCH_EMBED):
        return any(name == t or t.endswith(PATCH_EMBED) for t in targets)
    return True


def _short(name: str) -> str:
    """The end of a dotted name a target can use: `conv2`, or `downsample.0` for a numbered one."""
    parts = name.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def resolve_targets(model: nn.Module, target_modules: list[str] | str | None) -> list[str]:
    """Full dotted names of the layers that `target_modules` selects (head excluded).

    Raises ValueError naming the targets and the layer names the model does have when nothing
    matches, so a typo (`qvk`) or a model without such layers fails early.
    """
    base = plain_model(model)
    heads = classifier_names(base)

    def outside_head(name: str) -> bool:
        return not (name in heads or is_head_key(name, heads))

    if target_modules == ALL_LINEAR:
        return [n for n, m in base.named_modules() if isinstance(m, nn.Linear) and outside_head(n)]
    if isinstance(target_modules, str):
        raise ValueError(
            f"lora.target_modules {target_modules!r}: give a list of layer names or 'all-linear'"
        )
    targets = default_targets(base) if target_modules is None else list(target_modules)
    if not targets:
        raise ValueError("lora.target_modules is empty; name layers such as [qkv, proj, fc1, fc2]")
    layers = [
        (name, module)
        for name, module in base.named_modules()
        if _adaptable(module) and outside_head(name)
    ]
    found = [name for name, module in layers if _selected(name, module, targets)]
    # Every name must name some layer: a typo beside a good name would silently adapt half the
    # layers. (A name of layers LoRA leaves out, depthwise convs, is no typo: they are skipped.)
    named = [n for n, _ in base.named_modules() if n and outside_head(n)]
    missing = [t for t in targets if not any(n == t or n.endswith(f".{t}") for n in named)]
    if missing or not found:
        have = sorted({_short(n) for n, _ in layers})
        which = ", ".join(map(repr, missing or targets))
        raise ValueError(
            f"lora.target_modules: {which} of {targets} match no linear or (ungrouped) Conv2d "
            f"layer of {type(base).__name__}; its layers end in: {', '.join(have) or 'none'}"
        )
    return found


def peft_config(model: nn.Module, cfg: LoraConfig) -> PeftLoraConfig:
    """peft's LoraConfig for `cfg` on `model`: the variant's flags, the targets resolved here
    (or peft's own `all-linear`, with the head excluded)."""
    heads = classifier_names(plain_model(model))
    targets: list[str] | str
    if cfg.target_modules == ALL_LINEAR:
        targets = ALL_LINEAR
    else:
        targets = resolve_targets(model, cfg.target_modules)
    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=targets,
        exclude_modules=heads if targets == ALL_LINEAR else None,
        use_rslora=cfg.variant == "rslora",
        use_dora=cfg.variant == "dora",
        bias="none",
    )


def apply_lora(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Return `model` with LoRA adapters of `cfg` and a trainable head (peft wraps it in place).

    Rank 0 returns `model` itself with every parameter trainable: the full fine-tune baseline.
    """
    if cfg.rank == 0:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    wrapped = get_peft_model(model, peft_config(model, cfg))
    # peft freezes everything but the adapters; the new head starts random and must learn.
    set_head_trainable(wrapped)
    return wrapped


def adapter_shape_params(layer: nn.Module, rank: int, variant: str) -> int:
    """Parameters peft adds to one layer: A and B (and DoRA's magnitude, one per output).

    Linear (out, in): A is r x in, B is out x r. Conv2d: A is a conv in -> r with the layer's
    kernel, B a 1x1 conv r -> out.
    """
    if isinstance(layer, nn.Conv2d):
        kh, kw = layer.kernel_size
        n, out = rank * layer.in_channels * kh * kw + layer.out_channels * rank, layer.out_channels
    else:
        n, out = rank * (layer.in_features + layer.out_features), layer.out_features  # type: ignore[operator]
    return n + (out if variant == "dora" else 0)


def expected_trainable_params(model: nn.Module, cfg: LoraConfig) -> int:
    """Trainable parameters LoRA of `cfg` gives `model` (a plain model), from layer shapes alone:
    the adapters (`adapter_shape_params`) and the whole head. Rank 0 trains everything."""
    if cfg.rank == 0:
        return sum(p.numel() for p in model.parameters())
    adapters = sum(
        adapter_shape_params(model.get_submodule(n), cfg.rank, cfg.variant)
        for n in resolve_targets(model, cfg.target_modules)
    )
    heads = classifier_names(model)
    head = sum(p.numel() for n in heads for p in model.get_submodule(n).parameters())
    return adapters + head


def count_params(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts of `model` as it stands."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return total, trainable


def adapter_params(model: nn.Module) -> int:
    """Parameters of the LoRA A/B matrices (and DoRA magnitudes) in `model` (0 without adapters)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n)


def adapted_modules(model: nn.Module) -> int:
    """Number of layers carrying a LoRA adapter."""
    return sum(1 for n, _ in model.named_modules() if n.endswith(".lora_A"))


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and return the plain model (in place).

    W <- W + (alpha / r) * B @ A for every adapted layer; the result has the base model's layers,
    parameter count and speed. A model without adapters is returned unchanged.
    """
    if isinstance(model, PeftModel):
        return model.merge_and_unload()
    return model


def optimizer_state_bytes_per_param(optim: OptimConfig) -> float:
    """Bytes of optimizer state one trainable fp32 parameter costs with `optim`, measured.

    One step of the optimizer on a probe tensor; scalar state (step counters) is left out because
    it does not grow with the parameters.
    """
    from timm.optim import create_optimizer_v2

    probe = nn.Parameter(torch.zeros(1024))
    opt = create_optimizer_v2(
        [probe],
        opt=optim.name,
        lr=optim.lr,
        weight_decay=optim.weight_decay,
        momentum=optim.momentum,
    )
    probe.grad = torch.full_like(probe, 1e-3)
    opt.step()
    state_bytes = sum(
        t.numel() * t.element_size()
        for st in opt.state.values()
        for t in st.values()
        if isinstance(t, torch.Tensor) and t.numel() > 1
    )
    return state_bytes / probe.numel()


def lora_metrics(model: nn.Module, base_params: int, optim: OptimConfig) -> dict[str, Any]:
    """The metrics of the module docstring for `model` (after `apply_lora`).

    `base_params` is the parameter count of the model before adapters were added: what a full
    fine-tune would train.
    """
    total, trainable = count_params(model)
    out: dict[str, Any] = {
        "params/total": total,
        "params/trainable": trainable,
        "params/trainable_pct": 100.0 * trainable / total if total else None,
        "lora/adapter_params": adapter_params(model),
        "lora/adapted_modules": adapted_modules(model),
    }
    try:
        per_param = optimizer_state_bytes_per_param(optim)
    except Exception as exc:  # an exotic optimizer must not cost the trial its other metrics
        out.update(
            {
                "lora/opt_state_mb": None,
                "lora/opt_state_full_mb": None,
                "lora/opt_state_saved_mb": None,
                "lora/opt_state_error": f"{type(exc).__name__}: {exc}",
            }
        )
        return out
    out["lora/opt_state_mb"] = per_param * trainable / MIB
    out["lora/opt_state_full_mb"] = per_param * base_params / MIB
    out["lora/opt_state_saved_mb"] = out["lora/opt_state_full_mb"] - out["lora/opt_state_mb"]
    return out
