"""Where a trial runs and in what precision: the device, and Accelerate's `mixed_precision` for
the trial's `precision` (`auto` is bf16 on a CUDA device that supports it, fp32 elsewhere)."""

from __future__ import annotations

import torch

from trainables.config import TrialConfig


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device: cuda was asked for but torch sees no CUDA device; use auto or cpu"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError("device: mps was asked for but is not available; use auto or cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> str:
    """Accelerate's mixed_precision for our precision: `auto` is bf16 on capable CUDA, else fp32.

    On CPU, bf16 matmul is ~100x slower than fp32 here, so auto never picks it there.
    """
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return "bf16"
        return "no"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(
            f"precision: fp16 needs a CUDA device, this trial runs on {device.type}; "
            "use fp32, bf16 or auto"
        )
    return {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}[precision]


def trial_precision(cfg: TrialConfig, device: torch.device) -> str:
    """fp32, fp16 or bf16: the precision the trial runs in (`auto` resolved)."""
    mixed = resolve_precision(cfg.precision, device)
    return "fp32" if mixed == "no" else mixed
