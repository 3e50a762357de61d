"""Out of memory as data: what a `torch.OutOfMemoryError` looked like, and `optim.auto_batch_size`.

- `oom_facts(device, batch_size, phase)`: the batch size and the device's memory at the moment an
  OOM was caught (`oom/*` keys), recorded in the trial's `trials` row; on a device without memory
  counters the figures are None with `oom/null_reason`, never 0.
- `oom_recorded(device, reporter, batch_size, phase, epoch)`: a block whose out-of-memory error
  is recorded (`oom/*` in the trial-end report) and raised again with the figures in its message.
- `fit_batch_size(step, start)`: Accelerate's `find_executable_batch_size` (its
  `should_reduce_batch_size` also knows cuDNN's and the CPU allocator's OOMs) from `start`,
  stepping down with timm's `decay_batch_step` (one step per power of two: 48 -> 32 -> 16, as
  timm's benchmark.py does) until one step fits; returns that size and the sizes that did not.
- `training_step_probe(...)`: one real training step (forward, backward, optimizer) on random
  inputs of a given batch size; `kept_state(model, optimizer)` puts weights, optimizer state and
  the RNG back afterwards, so probing leaves training exactly as it would have been.
- the loaders are built once the size is known (`trainables.loop.setup.TrialContext.loaders`).

In a multi-worker trial each worker probes alone (no DDP collective can hang on one worker's OOM)
and all take the smallest size that fit anywhere. The probe runs without DDP's gradient buckets
(about one more copy of the gradients): keep that headroom in mind on a full device.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from profilers.memory import MIB
from profilers.metric_registry import INT, F, S, declare
from profilers.rng import with_own_rng

declare(
    __name__,
    {
        "optim/batch_size_used": (
            INT,
            "count",
            "batch size per worker the trial trained with (optim.auto_batch_size may lower it)",
        ),
        "optim/auto_batch_oom_sizes": (
            S,
            "",
            "batch sizes that ran out of memory before one fitted (comma-separated)",
        ),
        "oom/batch_size": (INT, "count", "batch size per worker when out of memory struck"),
        "oom/phase": (S, "", "where it struck: train, eval or the auto_batch_size probe"),
        "oom/epoch": (INT, "count", "the epoch it struck in"),
        "oom/gpu_allocated_mb": (F, "MiB", "torch.cuda.memory_allocated when it struck"),
        "oom/gpu_reserved_mb": (F, "MiB", "torch.cuda.memory_reserved when it struck"),
        "oom/gpu_peak_allocated_mb": (
            F,
            "MiB",
            "torch.cuda.max_memory_allocated since the last peak reset (the failed region's peak)",
        ),
        "oom/gpu_free_mb": (F, "MiB", "free device memory (cudaMemGetInfo) when it struck"),
        "oom/gpu_total_mb": (F, "MiB", "total device memory (cudaMemGetInfo)"),
        "oom/null_reason": (S, "", "why the oom/gpu_* figures are null"),
    },
)


class BatchSizeError(torch.OutOfMemoryError):
    """Not even a batch of one fits: the trial fails with every size that was tried."""


def free_memory(device: torch.device) -> None:
    """Drop what a failed step left behind before the next try."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_facts(
    device: torch.device, batch_size: int, phase: str, epoch: int | None = None
) -> dict[str, Any]:
    """The `oom/*` facts: call inside the `except torch.OutOfMemoryError` block."""
    out: dict[str, Any] = {"oom/batch_size": batch_size, "oom/phase": phase, "oom/epoch": epoch}
    keys = ("allocated", "reserved", "peak_allocated", "free", "total")
    if device.type != "cuda" or not torch.cuda.is_available():
        out.update({f"oom/gpu_{k}_mb": None for k in keys})
        out["oom/null_reason"] = f"device is {device.type}: GPU memory counters do not apply"
        return out
    out["oom/gpu_allocated_mb"] = torch.cuda.memory_allocated(device) / MIB
    out["oom/gpu_reserved_mb"] = torch.cuda.memory_reserved(device) / MIB
    out["oom/gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / MIB
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError as err:  # a device left unusable by the failure
        out["oom/gpu_free_mb"] = out["oom/gpu_total_mb"] = None
        out["oom/null_reason"] = f"cudaMemGetInfo failed: {err}"[:300]
    else:
        out["oom/gpu_free_mb"] = free / MIB
        out["oom/gpu_total_mb"] = total / MIB
    return out


def oom_message(facts: dict[str, Any]) -> str:
    """One line for the error column: the batch size and the memory when it failed."""
    where = f"{facts['oom/phase']}" + (
        f", epoch {facts['oom/epoch']}" if facts.get("oom/epoch") else ""
    )
    text = f"out of memory at batch size {facts['oom/batch_size']} per worker ({where})"
    if facts.get("oom/gpu_allocated_mb") is not None:
        text += (
            f": {facts['oom/gpu_allocated_mb']:.0f} MiB allocated, "
            f"{facts['oom/gpu_reserved_mb']:.0f} MiB reserved"
        )
        if facts.get("oom/gpu_total_mb") is not None:
            text += f", {facts['oom/gpu_free_mb']:.0f} of {facts['oom/gpu_total_mb']:.0f} MiB free"
    return text + "; lower optim.batch_size or set optim.auto_batch_size: true"


def next_batch_size(batch_size: int) -> int:
    """The size to try after `batch_size` ran out of memory (0: none left)."""
    from timm.utils import decay_batch_step

    return int(decay_batch_step(batch_size, num_intra_steps=1))


def is_oom(err: BaseException) -> bool:
    """Out of memory, as Accelerate recognises it (CUDA, XPU, MPS, the CPU allocator, cuDNN's
    unsupported-size error) or as torch types it."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, Exception) and should_reduce_batch_size(err)
    )


def fit_batch_size(
    step: Callable[[int], None],
    start: int,
    *,
    device: torch.device | None = None,
    agree: Callable[[int], int] | None = None,
) -> tuple[int, list[int]]:
    """The largest size from `start` down at which `step(size)` runs without running out of
    memory: Accelerate's `find_executable_batch_size`, stepping down as timm does.

    Returns (size, sizes that ran out of memory). `agree` turns this process's answer into the
    one every worker uses (the minimum over workers). Raises `BatchSizeError` when not even
    one sample fits.
    """
    from accelerate.utils import find_executable_batch_size

    device = device or torch.device("cpu")
    failed: list[int] = []
    last: list[str] = []

    def smaller() -> int:
        failed.append(size)
        free_memory(device)
        return next_batch_size(size)

    @find_executable_batch_size(starting_batch_size=start, reduce_batch_size_fn=smaller)
    def probe(batch_size: int) -> int:
        nonlocal size
        size = batch_size
        try:
            step(batch_size)
        except Exception as err:
            if not is_oom(err):
                raise
            # Only the text: the exception's traceback holds the failed step's tensors.
            last[:] = [
                str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
            ]
            raise _Oom() from None
        return batch_size

    size = start
    try:
        chosen = probe()
    except RuntimeError as err:
        if "No executable batch size found" not in str(err):
            raise
        chosen = 0
    if agree is not None:
        chosen = agree(chosen)
    if chosen < 1:
        tried = ", ".join(str(s) for s in failed)
        raise BatchSizeError(
            f"optim.auto_batch_size: out of memory at every batch size tried ({tried}); last "
            f"error: {''.join(last)}. Use a smaller model, img_size or precision, or more device memory"
        )
    return chosen, [s for s in failed if s > chosen]


class _Oom(RuntimeError):
    """A probe step that ran out of memory, in the words Accelerate's retry loop looks for."""

    def __init__(self) -> None:
        super().__init__("probe step: out of memory.")


@contextmanager
def oom_recorded(
    device: torch.device, reporter: Any, batch_size: int, phase: str, epoch: int | None = None
) -> Iterator[None]:
    """An out-of-memory error in the block becomes data: its `oom/*` facts go to the trial-end
    report (`reporter.report_final`) and the error is raised again with them in its message.
    Nested blocks record the innermost one only."""
    try:
        yield
    except Exception as err:
        if getattr(err, "oom_recorded", False) or not is_oom(err):
            raise
        got = oom_facts(device, batch_size, phase, epoch)
        reporter.report_final(got)
        again = type(err)(f"{oom_message(got)}\n{err}")
        again.oom_recorded = True  # type: ignore[attr-defined]
        raise again from err


@contextmanager
def kept_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Weights (on the CPU), optimizer state and RNG as they were before the block."""
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    opt_state = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    devices = [p.device for p in model.parameters()][:1]
    cuda = [d.index or 0 for d in devices if d.type == "cuda"]
    try:
        with torch.random.fork_rng(devices=cuda):
            yield
    finally:
        optimizer.zero_grad(set_to_none=True)
        model.load_state_dict(weights)
        optimizer.load_state_dict(opt_state)
        model.train(was_training)


def training_step_probe(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    device: torch.device,
    img_size: int,
    num_classes: int,
    autocast: Callable[[], Any],
    backward: Callable[[torch.Tensor], None],
    channels_last: bool = False,
) -> Callable[[int], None]:
    """`step(batch_size)`: one full training step on random images of `img_size`."""

    @with_own_rng  # the probe's images and dropout must not shift the trial's random stream
    def step(batch_size: int) -> None:
        model.train()
        images = torch.randn(batch_size, 3, img_size, img_size, device=device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.randint(0, num_classes, (batch_size,), device=device)
        try:
            with autocast():
                loss = loss_fn(model(images), labels)
            backward(loss)
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        finally:
            optimizer.zero_grad(set_to_none=True)

    return step
