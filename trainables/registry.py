"""The names a sweep file may use for trainables and datasets, each registered once.

A name maps to `"module:function"`, imported only when a trial needs it: the sweep schema takes
its accepted names from these dicts without importing torch, timm or the trainables themselves.

- A trainable is `run(config: dict, reporter: Reporter) -> None` (`trainables.loop.reporting`).
- A dataset opener is `open(cfg: DatasetConfig, img_size: int, seed: int) -> RawData` (`trainables.data.loaders`): the
  images before any model-specific pipeline, which `trainables.data.loaders.attach_pipeline` adds once
  the model (and so its mean, std, interpolation and crop) is known.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

TRAINABLES: dict[str, str] = {
    "train": "trainables.train:run",
    "finetune": "trainables.finetune:run",
    "lora": "trainables.lora:run",
    "prune_recover": "trainables.prune_recover:run",
    "bench": "trainables.bench:run",
}

# The optional config sections each trainable reads; the others are left out of its recorded
# params (a `train` trial has no prune ratio, whatever defaults its config carries).
OPTIONAL_SECTIONS = ("finetune", "lora", "prune", "bench")
TRAINABLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": (),
    "finetune": ("finetune",),
    "lora": ("finetune", "lora"),
    "prune_recover": ("finetune", "prune"),
    "bench": ("bench", "finetune", "lora"),
}

DATASETS: dict[str, str] = {
    "digits": "trainables.data.loaders:open_digits",
    "cifar10": "trainables.data.loaders:open_cifar",
    "cifar100": "trainables.data.loaders:open_cifar",
    "imagefolder": "trainables.data.loaders:open_image_folder",
    "imagenet": "trainables.data.imagenet:open_imagenet",
    "synthetic": "trainables.data.loaders:open_synthetic",
}
# The folder each CIFAR dataset's official tarball unpacks to, under `dataset.root`.
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
# Dataset names by prefix: Hugging Face `datasets` image-classification sets.
DATASET_PREFIXES: dict[str, str] = {
    "hf/": "trainables.data.hf:open_hf_dataset",
    "hf:": "trainables.data.hf:open_hf_dataset",
}


def load(ref: str) -> Callable[..., Any]:
    """The function behind a `"module:function"` reference."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def trainable(name: str) -> Callable[..., Any]:
    """The trainable `name`, as every runner starts it: after a clean start of the process, ending
    with one trial-end report that carries its total times (`trainables.loop.scope`)."""
    if name not in TRAINABLES:
        raise KeyError(f"unknown trainable {name!r}; registered: {', '.join(TRAINABLES)}")
    from trainables.loop.scope import scoped

    return scoped(load(TRAINABLES[name]))


def check_dataset_name(name: str) -> None:
    """Raise ValueError unless `name` is registered or carries a registered prefix."""
    if name in DATASETS:
        return
    prefix = next((p for p in DATASET_PREFIXES if name.startswith(p)), None)
    if prefix is None or name == prefix:
        raise ValueError(
            f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}, 'hf/<dataset id>' or "
            "'hf:<path>'"
        )
    if prefix == "hf:":
        from pathlib import Path

        if not Path(name[len(prefix) :]).exists():
            raise ValueError(
                f"dataset.name {name!r}: no such folder or file (an 'hf:' path is a "
                "save_to_disk folder, a Parquet file, or a folder of Parquet files)"
            )


def dataset_opener(name: str) -> Callable[..., Any]:
    if name in DATASETS:
        return load(DATASETS[name])
    for prefix, ref in DATASET_PREFIXES.items():
        if name.startswith(prefix):
            return load(ref)
    raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}, hf/..., hf:...")


def load_metric_declarations() -> None:
    """Import every module of `trainables` and `profilers` (every module that produces metrics
    declares them at import): afterwards `profilers.metric_registry` knows every key a trial can
    report, whatever this process happened to import before. The orchestrator's own few keys
    (`env/ray_node_id`, ...) are declared by `orchestrator.workers.trial_runner`."""
    import pkgutil

    for package in ("trainables", "profilers"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            importlib.import_module(info.name)
