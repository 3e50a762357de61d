"""The epoch loop every trainable shares: `train_one_epoch` and `evaluate`, each returning flat metrics.

Keys: `train/loss` (mean cross-entropy over samples), `train/acc`, `val/loss`, `val/acc`,
`val/f1_macro` (macro F1 over the whole validation split, as scikit-learn's `f1_score`),
`train/samples`, `val/samples`, plus the step timer's `time/*` keys for the training epoch.

Under several processes (a multi-worker trial) every figure covers all workers: training sums are
all-reduced once per epoch, validation is gathered, and the samples Accelerate repeats to fill
the last batch of each worker's shard are left out of both (`real_samples`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from accelerate import Accelerator
from torch import nn

from profilers.metric_registry import INT, F, declare
from profilers.step_timer import StepTimer

# A torch DataLoader or a trainables.data.loaders.DeviceLoader: (images, labels) batches.
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]

declare(
    __name__,
    {
        "train/loss": (F, "nats", "mean cross-entropy over the epoch's training samples"),
        "train/acc": (F, "0-1", "top-1 accuracy on the epoch's training samples"),
        "val/loss": (F, "nats", "mean cross-entropy over the validation split"),
        "val/acc": (F, "0-1", "top-1 accuracy on the validation split"),
        "val/f1_macro": (F, "0-1", "macro F1 over the whole validation split (as scikit-learn's)"),
        "train/samples": (
            INT,
            "count",
            "training samples in the epoch over every worker (a sharded epoch's padding left out)",
        ),
        "val/samples": (INT, "count", "validation samples scored, over every worker"),
    },
)


def to_device(
    images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch on the device, images in the memory format the model's weights are in.

    A channels_last model fed NCHW inputs converts them inside its first convolution; converting
    here, once per batch, keeps every layer in channels_last (`model.channels_last`).
    """
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf: the trial is recorded as failed, not as a number."""


def train_one_epoch(
    model: nn.Module,
    loader: Batches,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    loss_fn: nn.Module,
    *,
    on_update: Callable[[], None] | None = None,
    max_batches: int | None = None,
    timer: StepTimer | None = None,
    channels_last: bool = False,
) -> dict[str, float | None]:
    model.train()
    # Summed on the device; read once at the end so the loop never waits on a .item().
    loss_sum = torch.zeros((), device=accelerator.device)
    correct = torch.zeros((), device=accelerator.device, dtype=torch.long)
    seen = 0
    if timer is not None:
        timer.start_epoch()
    for step, (images, labels) in enumerate(loader):
        if max_batches is not None and step >= max_batches:
            break
        images, labels = to_device(images, labels, accelerator.device, channels_last)
        if timer is not None:
            timer.batch_ready()
        with accelerator.accumulate(model):
            with accelerator.autocast():
                logits = model(images)
                loss = loss_fn(logits, labels)
            accelerator.backward(loss)
            optimizer.step()
            if on_update is not None and accelerator.sync_gradients:
                on_update()
            optimizer.zero_grad(set_to_none=True)
        n = labels.shape[0]
        seen += _tally(accelerator, loss_fn, logits, labels, loss, loss_sum, correct)
        if timer is not None:
            timer.step_done(n)
    return _train_metrics(accelerator, timer, loss_sum, correct, seen)


def _tally(
    accelerator: Accelerator,
    loss_fn: nn.Module,
    logits: torch.Tensor,
    labels: torch.Tensor,
    loss: torch.Tensor,
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
) -> int:
    """Add one step's loss and correct predictions, real samples only, into the device sums (in
    place); returns the number of real samples."""
    n = labels.shape[0]
    real = real_samples(accelerator, n)
    if real == n:
        loss_sum += loss.detach().float() * n
        correct += (logits.detach().argmax(dim=1) == labels).sum()
    elif real > 0:  # the last batch of a sharded epoch, filled up with repeated samples
        with torch.no_grad():
            loss_sum += loss_fn(logits[:real].detach(), labels[:real]).float() * real
        correct += (logits[:real].detach().argmax(dim=1) == labels[:real]).sum()
    return real


def _train_metrics(
    accelerator: Accelerator,
    timer: StepTimer | None,
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
) -> dict[str, float | None]:
    """The epoch's training metrics, over every worker's samples."""
    workers = accelerator.num_processes
    if workers > 1:
        # Every worker's samples: one all-reduce per epoch, after the last step.
        count = torch.tensor(float(seen), device=loss_sum.device)
        totals = accelerator.reduce(torch.stack([loss_sum.float(), correct.float(), count]), "sum")
        loss_sum, correct, seen = totals[0], totals[1], round(totals[2].item())
    metrics: dict[str, float | None] = (
        timer.end_epoch(samples=seen if workers > 1 else None, workers=workers)
        if timer is not None
        else {}
    )
    if seen == 0:
        raise RuntimeError("train_one_epoch: the training loader yielded no batches")
    metrics["train/samples"] = seen
    mean_loss = loss_sum.item() / seen
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise NonFiniteLossError(
            f"train/loss is {mean_loss}: lower optim.lr, or use precision fp32/bf16 instead of fp16"
        )
    metrics["train/loss"] = mean_loss
    metrics["train/acc"] = correct.item() / seen
    return metrics


def real_samples(accelerator: Accelerator, n: int) -> int:
    """How many of this worker's `n` samples are the dataset's own, not padding.

    Sharded over several workers, Accelerate fills the epoch's last batch of every worker up to
    the full batch with samples from the epoch's start (`even_batches`), so DDP steps stay in
    lockstep; the real ones come first, in rank order (what `gather_for_metrics` trims).
    """
    state = accelerator.gradient_state
    if accelerator.num_processes == 1 or not state.end_of_dataloader or state.remainder <= 0:
        return n
    return max(0, min(n, state.remainder - accelerator.process_index * n))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: Batches,
    accelerator: Accelerator,
    loss_fn: nn.Module,
    *,
    max_batches: int | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device)
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    for step, (images, labels) in enumerate(loader):
        if max_batches is not None and step >= max_batches:
            break
        images, labels = to_device(images, labels, accelerator.device, channels_last)
        with accelerator.autocast():
            logits = model(images)
        # Per sample, gathered and trimmed like the predictions: a multi-process run scores
        # the whole split once, not one shard, and not the padding of its last batch.
        per_sample = nn.functional.cross_entropy(
            logits.float(),
            labels,
            reduction="none",
            label_smoothing=getattr(loss_fn, "label_smoothing", 0.0),
        )
        loss_sum += accelerator.gather_for_metrics(per_sample).sum()
        preds.append(accelerator.gather_for_metrics(logits.argmax(dim=1)))
        targets.append(accelerator.gather_for_metrics(labels))
    if not preds:
        raise RuntimeError("evaluate: the validation loader yielded no batches")
    pred = torch.cat(preds).cpu().numpy()
    true = torch.cat(targets).cpu().numpy()
    return {
        "val/samples": len(true),
        "val/loss": loss_sum.item() / len(true),
        "val/acc": float((pred == true).mean()),
        "val/f1_macro": macro_f1(true, pred),
    }


def macro_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """scikit-learn's `f1_score(true, pred, average="macro", zero_division=0)`: the mean over the
    labels in either array of 2TP / (2TP + FP + FN). Computed here: importing `sklearn.metrics`
    (scipy and the rest) costs a trial's start about a second."""
    labels, inverse = np.unique(np.concatenate([true, pred]), return_inverse=True)
    t, p = inverse[: len(true)], inverse[len(true) :]
    n = len(labels)
    tp = np.bincount(t[t == p], minlength=n)
    # 2TP + FP + FN = (TP + FN) + (TP + FP): how often a label is true, plus how often predicted.
    denom = np.bincount(t, minlength=n) + np.bincount(p, minlength=n)
    return float(np.mean(2 * tp / denom)) if n else 0.0
