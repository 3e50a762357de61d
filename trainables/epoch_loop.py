"""The epoch loop every trainable shares: `train_one_epoch` and `evaluate`, each returning flat metrics.

Keys: `train/loss` (mean cross-entropy over samples), `train/acc`, `val/loss`, `val/acc`,
`val/f1_macro` (scikit-learn's macro F1 over the whole validation split), plus the step timer's
`time/*` keys for the training epoch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import Accelerator
from sklearn.metrics import f1_score
from torch import nn
from torch.utils.data import DataLoader

from profilers.metric_registry import F, declare
from profilers.step_timer import StepTimer

declare(
    __name__,
    {
        "train/loss": (F, "nats", "mean cross-entropy over the epoch's training samples"),
        "train/acc": (F, "0-1", "top-1 accuracy on the epoch's training samples"),
        "val/loss": (F, "nats", "mean cross-entropy over the validation split"),
        "val/acc": (F, "0-1", "top-1 accuracy on the validation split"),
        "val/f1_macro": (F, "0-1", "scikit-learn macro F1 over the whole validation split"),
    },
)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or inf: the trial is recorded as failed, not as a number."""


def train_one_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    accelerator: Accelerator,
    loss_fn: nn.Module,
    *,
    on_update: Callable[[], None] | None = None,
    max_batches: int | None = None,
    timer: StepTimer | None = None,
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
        images = images.to(accelerator.device, non_blocking=True)
        labels = labels.to(accelerator.device, non_blocking=True)
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
        loss_sum += loss.detach().float() * n
        correct += (logits.detach().argmax(dim=1) == labels).sum()
        seen += n
        if timer is not None:
            timer.step_done(n)
    metrics: dict[str, float | None] = timer.end_epoch() if timer is not None else {}
    if seen == 0:
        raise RuntimeError("train_one_epoch: the training loader yielded no batches")
    mean_loss = loss_sum.item() / seen
    if not torch.isfinite(torch.tensor(mean_loss)):
        raise NonFiniteLossError(
            f"train/loss is {mean_loss}: lower optim.lr, or use precision fp32/bf16 instead of fp16"
        )
    metrics["train/loss"] = mean_loss
    metrics["train/acc"] = correct.item() / seen
    return metrics


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    accelerator: Accelerator,
    loss_fn: nn.Module,
    *,
    max_batches: int | None = None,
) -> dict[str, float]:
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device)
    preds: list[torch.Tensor] = []
    targets: list[torch.Tensor] = []
    for step, (images, labels) in enumerate(loader):
        if max_batches is not None and step >= max_batches:
            break
        images = images.to(accelerator.device, non_blocking=True)
        labels = labels.to(accelerator.device, non_blocking=True)
        with accelerator.autocast():
            logits = model(images)
            loss = loss_fn(logits, labels).float() * labels.shape[0]
        # Gathered so that a multi-process run scores the whole split, not one shard.
        loss_sum += accelerator.reduce(loss, reduction="sum")
        preds.append(accelerator.gather_for_metrics(logits.argmax(dim=1)))
        targets.append(accelerator.gather_for_metrics(labels))
    if not preds:
        raise RuntimeError("evaluate: the validation loader yielded no batches")
    pred = torch.cat(preds).cpu().numpy()
    true = torch.cat(targets).cpu().numpy()
    return {
        "val/loss": loss_sum.item() / len(true),
        "val/acc": float((pred == true).mean()),
        "val/f1_macro": float(f1_score(true, pred, average="macro", zero_division=0)),
    }
