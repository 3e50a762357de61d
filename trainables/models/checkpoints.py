"""Model weights on disk: save as safetensors, load safetensors or torch files, swap the head.

Every trial checkpoint is one `model.safetensors` (the model's state dict, tensors only, nothing
executable) inside the directory Ray Tune turns into a checkpoint. A model carrying LoRA adapters
is saved as it is (base weights + adapters, so a resumed trial continues training them) with the
LoRA settings in the file's metadata; loading such a file into a plain model merges the adapters
into the base weights, which is what a later stage starting from a LoRA stage needs.

Loading accepts:
- a `.safetensors` file, or a directory holding `model.safetensors`;
- a torch file (`.pt`, `.pth`, `.bin`, `.ckpt`) read with `torch.load(weights_only=True)`: a state
  dict, or a dict that holds one under `state_dict`, `model`, `model_state_dict` or `module`.

Keys of the checkpoint's classifier head whose shapes differ from the model's are dropped, so the
model keeps its freshly created head for the new number of classes; any other difference is an
error that names the keys.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from trainables.models.heads import classifier_names, is_head_key, plain_model, unwrap

CHECKPOINT_FILE = "model.safetensors"
TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
ACCEPTED = (
    f"a .safetensors file, a directory holding {CHECKPOINT_FILE}, or a torch file "
    f"({', '.join(TORCH_SUFFIXES)}) of tensors that loads with torch.load(weights_only=True)"
)
_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")
# Wrappers that prefix every key: DDP / DataParallel, torch.compile.
_PEFT_PREFIX = "base_model.model."
FORMAT_VERSION = "1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


@dataclass
class LoadReport:
    """What `load_weights` did: how many tensors it loaded and which head keys it dropped."""

    path: str
    loaded: int
    head_reset: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    merged_lora: bool = False
    resampled: list[str] = field(default_factory=list)


def save_model(model: nn.Module, directory: str | Path) -> Path:
    """Write `model`'s state dict to `directory/model.safetensors` and return the file's path."""
    model = unwrap(model, peft=False)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    seen: set[tuple[int, int]] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        t = t.detach().cpu()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset())
        # safetensors refuses tensors that share memory (tied weights): store a copy of each alias.
        tensors[key] = t.clone().contiguous() if ident in seen else t.contiguous()
        seen.add(ident)
    path = directory / CHECKPOINT_FILE
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=_metadata(model))
    tmp.replace(path)  # a reader (resume, a later stage) never sees a half-written file
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint (see the module docstring for what is accepted)."""
    file = resolve_checkpoint_file(path)
    if file.suffix == ".safetensors":
        try:
            tensors = load_file(str(file))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"cannot read checkpoint {file}: {exc}; expected {ACCEPTED}"
            ) from exc
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
        return _strip_wrappers(tensors), meta
    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors come in many types; all mean the same to the user
        raise CheckpointError(
            f"cannot read checkpoint {file} with torch.load(weights_only=True): "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}; "
            f"expected {ACCEPTED}"
        ) from exc
    return _strip_wrappers(_find_state_dict(obj, file)), {}


def resolve_checkpoint_file(path: str | Path) -> Path:
    """The file a checkpoint path names: the path itself or `<dir>/model.safetensors`."""
    p = Path(path).expanduser()
    if p.is_dir():
        candidate = p / CHECKPOINT_FILE
        if not candidate.is_file():
            inside = sorted(x.name for x in p.iterdir())[:10]
            raise CheckpointError(
                f"checkpoint directory {p} holds no {CHECKPOINT_FILE} (it holds {inside}); "
                f"expected {ACCEPTED}"
            )
        return candidate
    if not p.is_file():
        raise CheckpointError(f"checkpoint {p} does not exist; expected {ACCEPTED}")
    if p.suffix != ".safetensors" and p.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"checkpoint {p} has an unknown suffix {p.suffix!r}; expected {ACCEPTED}"
        )
    return p


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> LoadReport:
    """Load the checkpoint at `path` into `model` in place.

    Head keys whose shapes differ from the model's head (another number of classes) are skipped:
    the model keeps its new head. With `strict`, any other missing, unexpected or mis-shaped key
    raises CheckpointError naming it; without, they are only listed in the report. A checkpoint
    with LoRA adapters loads into a model with the same adapters as is, and into a plain model by
    merging the adapters into the base weights.
    """
    tensors, meta = read_checkpoint(path)
    target = unwrap(model, peft=False)
    merged = False
    if _has_peft_keys(tensors) and not _has_peft_keys(target.state_dict()):
        tensors = _merge_lora_tensors(target, tensors, meta, path)
        merged = True
    own = target.state_dict()
    heads = classifier_names(target)
    tensors, resampled = _timm_resample(target, tensors, own, heads)
    head_reset = sorted(
        k
        for k, v in tensors.items()
        if k in own and is_head_key(k, heads) and v.shape != own[k].shape
    )
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in tensors.items()
        if k in own and k not in head_reset and v.shape != own[k].shape
    ]
    unexpected = sorted(k for k in tensors if k not in own)
    missing = sorted(k for k in own if k not in tensors and not is_head_key(k, heads))
    if strict and (mismatched or unexpected or missing):
        raise CheckpointError(
            f"checkpoint {path} does not fit {type(plain_model(target)).__name__}: "
            + "; ".join(
                part
                for part in (
                    _listing("shape mismatch", mismatched),
                    _listing("keys the model lacks", unexpected),
                    _listing("model keys missing from the checkpoint", missing),
                )
                if part
            )
            + " (was it saved from another model or img_size?)"
        )
    usable = {
        k: v
        for k, v in tensors.items()
        if k in own and k not in head_reset and v.shape == own[k].shape
    }
    target.load_state_dict(usable, strict=False)
    return LoadReport(
        path=str(path),
        loaded=len(usable),
        head_reset=head_reset,
        missing=missing,
        unexpected=unexpected,
        merged_lora=merged,
        resampled=resampled,
    )


def load_backbone_weights(model: nn.Module, path: str | Path) -> LoadReport:
    """`model.pretrained: <path>`: start from local weights; a head for other classes is re-created.

    Strict about everything but the head, so a checkpoint of another architecture or img_size
    fails with the keys named instead of training from a half-loaded model.
    """
    return load_weights(model, path, strict=True)


def _timm_resample(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    own: dict[str, torch.Tensor],
    heads: list[str],
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Let timm adapt a checkpoint taken at another img_size/window (position embeddings, ...).

    timm ships a `checkpoint_filter_fn` per architecture that resamples position embeddings and
    relative-position tables to the model's grid, the same step it takes for hub weights. Only
    used when a non-head tensor differs in shape; returns the tensors and the keys it changed.
    """
    differs = [
        k
        for k, v in tensors.items()
        if k in own and v.shape != own[k].shape and not is_head_key(k, heads)
    ]
    import sys

    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    if not differs or not type(model).__module__.startswith("timm.") or filter_fn is None:
        return tensors, []
    try:
        adapted = filter_fn(dict(tensors), model)
    except Exception:  # the strict check that follows names the keys that still do not fit
        return tensors, []
    changed = sorted(k for k in differs if k in adapted and adapted[k].shape == own[k].shape)
    return adapted, changed


def _metadata(model: nn.Module) -> dict[str, str]:
    meta = {"format": "lvmbench", "format_version": FORMAT_VERSION}
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        cfg = next(iter(peft_config.values()))
        meta["lora"] = json.dumps(
            {
                "r": cfg.r,
                "lora_alpha": cfg.lora_alpha,
                "target_modules": sorted(cfg.target_modules),
                "use_rslora": bool(getattr(cfg, "use_rslora", False)),
                "use_dora": bool(getattr(cfg, "use_dora", False)),
            }
        )
    return meta


def _find_state_dict(obj: Any, file: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in _NESTED_KEYS:
            if key in obj:
                return _find_state_dict(obj[key], file)
    what = f"a dict with keys {list(obj)[:8]}" if isinstance(obj, dict) else type(obj).__name__
    raise CheckpointError(
        f"checkpoint {file} holds {what}, not a state dict of tensors (nor one under "
        f"{', '.join(_NESTED_KEYS)}); expected {ACCEPTED}"
    )


def _strip_wrappers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys without DDP's `module.` and torch.compile's `_orig_mod.` (timm's clean_state_dict)."""
    from timm.models import clean_state_dict

    return clean_state_dict(tensors)


def _has_peft_keys(tensors: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(_PEFT_PREFIX) for k in tensors)


def _merge_lora_tensors(
    model: nn.Module, tensors: dict[str, torch.Tensor], meta: dict[str, str], path: str | Path
) -> dict[str, torch.Tensor]:
    """Plain-model tensors from a LoRA checkpoint, merged by peft on a scratch copy of the model."""
    if "lora" not in meta:
        raise CheckpointError(
            f"checkpoint {path} holds peft keys ({_PEFT_PREFIX}...) but no 'lora' metadata, so its "
            "adapters cannot be merged; save it with trainables.models.checkpoints.save_model"
        )
    import copy

    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    lora = json.loads(meta["lora"])
    scratch = get_peft_model(
        copy.deepcopy(model),
        PeftLoraConfig(
            r=lora["r"],
            lora_alpha=lora["lora_alpha"],
            target_modules=lora["target_modules"],
            use_rslora=lora.get("use_rslora", False),
            use_dora=lora.get("use_dora", False),
        ),
    )
    own = scratch.state_dict()
    heads = [f"{_PEFT_PREFIX}{h}" for h in classifier_names(model)]
    misfit = sorted(
        k
        for k, v in tensors.items()
        if (k not in own or v.shape != own[k].shape) and not is_head_key(k, heads)
    ) + sorted(k for k in own if k not in tensors and not is_head_key(k, heads))
    if misfit:
        raise CheckpointError(
            f"LoRA checkpoint {path} does not fit {type(model).__name__}: "
            + _listing("keys missing or of another shape in the model", misfit)
        )
    reset = {k for k, v in tensors.items() if k in own and v.shape != own[k].shape}
    scratch.load_state_dict({k: v for k, v in tensors.items() if k not in reset}, strict=False)
    merged = scratch.merge_and_unload().state_dict()
    # The checkpoint's mis-shaped head goes back in so that load_weights reports it as reset.
    for k in reset:
        merged[k[len(_PEFT_PREFIX) :]] = tensors[k]
    return merged


def _listing(what: str, items: list[str], limit: int = 6) -> str:
    if not items:
        return ""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"{what}: {', '.join(items[:limit])}{more}"


STATE_FILE = "train_state.pt"


def save_train_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    """A resumable checkpoint: the weights (`model.safetensors`) and the optimizer/schedule state."""
    save_model(model, directory)  # safetensors; tied weights stored once each
    state: dict[str, Any] = {"epoch": epoch, "optimizer": optimizer.state_dict()}
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    torch.save(state, directory / STATE_FILE)


def restore_train_state(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> int:
    """Load a checkpoint written by `save_train_state`; returns the epoch it was taken after."""
    load_weights(model, directory / CHECKPOINT_FILE)
    state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["epoch"])
