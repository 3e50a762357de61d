"""The names a sweep file may use for trainables and datasets, each registered once.

A name maps to `"module:function"`, imported only when a trial needs it: the sweep schema takes
its accepted names from these dicts without importing torch, timm or the trainables themselves.

- A trainable is `run(config: dict, reporter: Reporter) -> None` (`trainables.reporting`).
- A dataset opener is `open(cfg: DatasetConfig, img_size: int, seed: int) -> RawData` (`trainables.data`): the
  images before any model-specific pipeline, which `trainables.data.attach_pipeline` adds once
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
}

# The optional config sections each trainable reads; the others are left out of its recorded
# params (a `train` trial has no prune ratio, whatever defaults its config carries).
OPTIONAL_SECTIONS = ("finetune", "lora", "prune")
TRAINABLE_SECTIONS: dict[str, tuple[str, ...]] = {
    "train": (),
    "finetune": ("finetune",),
    "lora": ("finetune", "lora"),
    "prune_recover": ("finetune", "prune"),
}

DATASETS: dict[str, str] = {
    "digits": "trainables.data:open_digits",
    "cifar10": "trainables.data:open_cifar",
    "cifar100": "trainables.data:open_cifar",
    "imagefolder": "trainables.data:open_image_folder",
    "imagenet": "trainables.data:open_image_folder",
    "synthetic": "trainables.data:open_synthetic",
}


def load(ref: str) -> Callable[..., Any]:
    """The function behind a `"module:function"` reference."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def trainable(name: str) -> Callable[..., Any]:
    if name not in TRAINABLES:
        raise KeyError(f"unknown trainable {name!r}; registered: {', '.join(TRAINABLES)}")
    return load(TRAINABLES[name])


def dataset_opener(name: str) -> Callable[..., Any]:
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; registered: {', '.join(DATASETS)}")
    return load(DATASETS[name])


def load_metric_declarations() -> None:
    """Import every trainable (and so every module that produces metrics): afterwards
    `profilers.metric_registry` knows every key a trial can report."""
    for ref in TRAINABLES.values():
        importlib.import_module(ref.partition(":")[0])
