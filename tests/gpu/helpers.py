"""What the GPU tests share: tiny models and one-batch trial configs, sized to prove a CUDA path
in seconds (the whole `pytest -m gpu` run has about two minutes of a lent GPU)."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from trainables.config import TrialConfig

PROFILERS_OFF = {"latency": False, "flops": False, "memory": False, "params": False}
TINY_VIT = {
    "name": "vit_tiny_patch16_224",
    "img_size": 32,
    "kwargs": {"depth": 1, "patch_size": 8, "embed_dim": 32, "num_heads": 2},
}


def one_batch_cfg(model: dict[str, Any] | None = None, **top: Any) -> TrialConfig:
    """One training and one validation batch of 8 digits at 16 px on a small ResNet."""
    return TrialConfig.model_validate(
        {
            "model": {"name": "resnet10t", "img_size": 16, **(model or {})},
            "dataset": {"name": "digits", "subset": 32},
            "optim": {"batch_size": 8, "epochs": 1, "max_train_batches": 1, "max_val_batches": 1},
            "precision": "fp32",
            "profilers": PROFILERS_OFF,
            "checkpoint": {"enabled": False},
            **top,
        }
    )


def tiny_vit(**kwargs: Any) -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        num_classes=10,
        img_size=32,
        patch_size=8,
        embed_dim=32,
        depth=1,
        num_heads=2,
        **kwargs,
    )


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )


def first_conv_autocast(model: nn.Module) -> list[dict[str, Any]]:
    """What the first convolution sees on each call under CUDA autocast."""
    seen: list[dict[str, Any]] = []
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))

    def hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        seen.append(
            {
                "input_cuda": args[0].is_cuda,
                "autocast": torch.is_autocast_enabled("cuda"),
                "autocast_dtype": torch.get_autocast_dtype("cuda"),
                "out_dtype": out.dtype,
            }
        )

    conv.register_forward_hook(hook)
    return seen
