"""The set-up every trainable shares: seed, device, precision, the dataset, then — once the model
is built — the input pipeline the model asks for, and the loaders.

    setup = TrialSetup.begin(cfg)                        # seed, Accelerator, dataset opened
    model = create_model(cfg.model, setup.num_classes)   # the head sized to the dataset
    ctx = setup.with_model(model)                        # pipeline from the model, loaders
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader

from profilers.metric_registry import INT, F, S, declare
from trainables.config import TrialConfig
from trainables.data.loaders import (
    DataBundle,
    Pipeline,
    RawData,
    attach_pipeline,
    device_loaders,
    make_loader,
    open_data,
)
from trainables.loop.device import resolve_device, resolve_precision

declare(
    __name__,
    {
        "data/mean": (S, "", "normalization mean the model asks for (timm's data config)"),
        "data/std": (S, "", "normalization std the model asks for"),
        "data/interpolation": (S, "", "resampling the model asks for (bilinear, bicubic, ...)"),
        "data/crop_pct": (F, "fraction", "the model's evaluation centre crop (photo folders only)"),
        "data/train_samples": (INT, "count", "samples in the training split"),
        "data/val_samples": (INT, "count", "samples in the validation split"),
        "data/num_classes": (INT, "count", "classes of the dataset (chance accuracy = 1 / it)"),
    },
)


@dataclass
class TrialContext:
    cfg: TrialConfig
    accelerator: Accelerator
    data: DataBundle
    raw: RawData
    _loaders: dict[int, tuple[Any, Any]] = field(default_factory=dict, repr=False)

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    def loaders(self, batch_size: int) -> tuple[DataLoader, DataLoader]:
        """The train and val loaders at `batch_size`, built the first time they are asked for
        (`optim.auto_batch_size` knows its size only after probing: nothing is rebuilt)."""
        if batch_size not in self._loaders:
            self._loaders[batch_size] = self._build_loaders(batch_size)
        return self._loaders[batch_size]

    @property
    def train_loader(self) -> DataLoader:
        return self.loaders(self.cfg.optim.batch_size)[0]

    @train_loader.setter
    def train_loader(self, loader: Any) -> None:  # e.g. the loader Accelerate prepared
        self._loaders[self.cfg.optim.batch_size] = (loader, self.val_loader)

    @property
    def val_loader(self) -> DataLoader:
        return self.loaders(self.cfg.optim.batch_size)[1]

    @val_loader.setter
    def val_loader(self, loader: Any) -> None:
        self._loaders[self.cfg.optim.batch_size] = (self.train_loader, loader)

    def _build_loaders(self, batch_size: int) -> tuple[Any, Any]:
        cfg = self.cfg
        if cfg.dataset.on_device:
            return device_loaders(
                self.raw,
                self.data.pipeline,
                cfg.dataset,
                batch_size=batch_size,
                device=self.device,
                seed=cfg.seed,
            )
        train = make_loader(
            self.data.train, batch_size, shuffle=True, cfg=cfg.dataset, seed=cfg.seed
        )
        val = make_loader(self.data.val, batch_size, shuffle=False, cfg=cfg.dataset)
        return train, val

    def facts(self) -> dict[str, Any]:
        """What the trial's data looked like: the pipeline and the split sizes."""
        return {
            **self.data.pipeline.facts(),
            "data/train_samples": len(self.data.train),  # type: ignore[arg-type]
            "data/val_samples": len(self.data.val),  # type: ignore[arg-type]
            "data/num_classes": self.data.num_classes,
        }


@dataclass
class TrialSetup:
    cfg: TrialConfig
    accelerator: Accelerator
    raw: RawData

    @property
    def num_classes(self) -> int:
        return self.raw.num_classes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @classmethod
    def begin(cls, cfg: TrialConfig) -> TrialSetup:
        set_seed(cfg.seed)
        device = resolve_device(cfg.device)
        accelerator = Accelerator(
            cpu=device.type == "cpu",
            mixed_precision=resolve_precision(cfg.precision, device),
            gradient_accumulation_steps=cfg.optim.grad_accum,
        )
        raw = open_data(cfg.dataset, cfg.model.img_size, seed=cfg.seed)
        return cls(cfg, accelerator, raw)

    def with_model(self, model: nn.Module) -> TrialContext:
        """The dataset through `model`'s own pipeline (mean, std, interpolation, crop)."""
        cfg = self.cfg
        data = attach_pipeline(self.raw, Pipeline.from_model(model, cfg.model.img_size))
        if cfg.dataset.on_device and self.accelerator.num_processes > 1:
            raise ValueError(
                "dataset.on_device: true runs in one process; this trial has "
                f"{self.accelerator.num_processes} workers: set on_device: false"
            )
        return TrialContext(cfg, self.accelerator, data, self.raw)
