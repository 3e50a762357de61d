"""Unreachable resources, found on the driver before Ray starts: hub weights, CIFAR files, and
Hugging Face models and datasets (`hf/...`, which must then be in the local cache).

Offline, `pretrained: true` makes every trial spend about a minute in hub retries and then fail,
and a missing CIFAR folder fails every trial the same way. lvmbench checks once, up front:
- without a flag, such a sweep is an error (exit 2) that names the key and the ways out;
- with `--no-pretrained` (weights) or `--smoke` (weights and data), the resource is swapped —
  hub weights for random init, missing CIFAR-10 for the built-in `digits` (ten classes of real
  images), missing CIFAR-100 for `synthetic` images with 100 classes — the swap is printed, and
  every row records it in the `substitutions` column.
"""

from __future__ import annotations

import os
import socket
from functools import cache
from pathlib import Path

from orchestrator.driver.schema import SweepConfig, SweepError
from trainables.models.names import HF_HUB_PREFIX, TORCHVISION_PREFIX, is_hf, resolve
from trainables.registry import CIFAR_FOLDERS

HUB_HOST = ("huggingface.co", 443)
CIFAR_HOST = ("www.cs.toronto.edu", 443)
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}


@cache
def reachable(host: tuple[str, int], timeout: float = 3.0) -> bool:
    if host == HUB_HOST and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def weights_cached(model_name: str, kwargs: dict) -> bool:
    """True when timm's hub weights for this model are already in the local Hugging Face cache."""
    name, _ = resolve(model_name, kwargs)
    if is_hf(name):
        from trainables.models.hf import hf_cached

        return hf_cached(name)
    if name.startswith(TORCHVISION_PREFIX):
        return False
    try:
        import timm
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(name)
    except (ImportError, RuntimeError, ValueError):
        return False
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        return False
    return any(
        isinstance(try_to_load_from_cache(repo, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    )


def _check_hf(sweep: SweepConfig, names: list[str]) -> None:
    """transformers models and `datasets` sets come from the local cache when the hub is
    unreachable; nothing stands in for them, so a missing one is an error naming the cache."""
    hub_models = [n for n in names if n.startswith(HF_HUB_PREFIX)]
    data = sweep.dataset.name
    if not hub_models and not data.startswith(HF_HUB_PREFIX):
        return
    from trainables.data.hf import hf_dataset_cached
    from trainables.models.hf import hf_cached, hub_cache

    missing = [n for n in hub_models if not hf_cached(n)]
    if data.startswith(HF_HUB_PREFIX) and not hf_dataset_cached(data):
        missing.append(f"dataset {data}")
    if missing and not reachable(HUB_HOST):
        raise SweepError(
            f"model.name / dataset.name: {', '.join(missing)} not in the local Hugging Face cache "
            f"({hub_cache()}) and the hub is unreachable (or HF_HUB_OFFLINE is set). Fetch them "
            "where the hub is reachable, or save them locally and use 'hf:<path>'."
        )


def cifar_present(name: str, root: str) -> bool:
    return (Path(root) / CIFAR_FOLDERS[name]).is_dir()


def check_offline(sweep: SweepConfig, *, swap_weights: bool, swap_data: bool) -> SweepConfig:
    """The sweep with unreachable resources swapped (as allowed) or a SweepError naming them."""
    out = sweep.model_copy(deep=True)
    notes: list[str] = []
    names = [sweep.model.name]
    searched = sweep.search.get("model.name")
    if searched is not None and searched.kind in ("grid", "choice"):
        names = [str(n) for n in searched.value]
    # A grid over whole `model` mappings: each entry names its model and its own `pretrained`.
    whole = sweep.search.get("model")
    entries = [m for m in (whole.value if whole and whole.kind in ("grid", "choice") else [])]
    entries = [m for m in entries if isinstance(m, dict)]
    if entries:
        names = [str(m.get("name", sweep.model.name)) for m in entries]
    _check_hf(sweep, names)
    wanted = [n for n in names if sweep.model.pretrained is True and not entries]
    wanted += [str(m.get("name")) for m in entries if m.get("pretrained") is True]
    if wanted:
        missing = [n for n in wanted if not weights_cached(n, sweep.model.kwargs)]
        if missing and not reachable(HUB_HOST):
            if not swap_weights:
                raise SweepError(
                    f"model.pretrained: true, but the weights of {', '.join(missing)} are not in the "
                    "local cache and the hub is unreachable. Pass --no-pretrained to train from "
                    "random init (recorded in the rows), or set model.pretrained to a local file."
                )
            out.model.pretrained = False
            out_whole = out.search.get("model")
            for entry in out_whole.value if out_whole is not None and entries else []:
                if isinstance(entry, dict) and entry.get("pretrained") is True:
                    entry["pretrained"] = False
            notes.append(f"model.pretrained: true -> false (hub unreachable; {', '.join(missing)})")
    ds = sweep.dataset
    unreachable = not (ds.download and reachable(CIFAR_HOST))
    if ds.name in CIFAR_FOLDERS and not cifar_present(ds.name, ds.root) and unreachable:
        if not swap_data:
            raise SweepError(
                f"dataset.root: no {CIFAR_FOLDERS[ds.name]}/ under {ds.root} and it cannot be "
                f"downloaded here. Put the extracted {ds.name} python files there, set "
                "dataset.root, or run with --smoke (which swaps in synthetic images)."
            )
        if ds.name == "cifar10":
            # Ten classes of real images: accuracy still means something in a smoke run.
            out.dataset.name = "digits"
            notes.append("dataset: cifar10 -> digits (no CIFAR-10 files, no download)")
        else:
            out.dataset.name = "synthetic"
            out.dataset.num_classes = CIFAR_CLASSES[ds.name]
            notes.append(
                f"dataset: {ds.name} -> synthetic, {CIFAR_CLASSES[ds.name]} classes (no files)"
            )
    for note in notes:
        print(f"substitution: {note}", flush=True)
    out.substitutions = [*sweep.substitutions, *notes]
    return out
