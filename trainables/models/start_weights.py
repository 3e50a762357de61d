"""The weights a fine-tune or LoRA trial starts from, and a record of where they came from.

In order: `model.pretrained` (true: the hub through timm/torchvision; a path: a local checkpoint),
then `start.checkpoint` (an earlier stage's best checkpoint, set per trial by the stage runner),
then `finetune.checkpoint` on top when given. A checkpoint whose head has another number of classes
keeps its backbone and gets a new head sized to this dataset (`trainables.models.checkpoints`).

| key                  | unit  | meaning                                                             |
|----------------------|-------|---------------------------------------------------------------------|
| init/from_weights    | 0/1   | 1 when the trial starts from trained weights (hub, file, stage)    |
| init/loaded_tensors  | count | tensors loaded from a local checkpoint (None: none was loaded)      |
| init/head_reset      | 0/1   | 1 when the checkpoint's head was dropped and re-created             |
| init/resampled       | count | tensors timm resampled to this img_size (position embeddings, ...) |
"""

from __future__ import annotations

from typing import Any

from torch import nn

from profilers.metric_registry import INT, S, declare
from trainables.config import StartConfig, TrialConfig
from trainables.loop.profiling import needs_dynamic_img_size
from trainables.models.checkpoints import LoadReport, load_weights
from trainables.models.create import create_model

declare(
    __name__,
    {
        "init/from_weights": (
            INT,
            "0/1",
            "1 when the trial starts from trained weights (hub, file, stage)",
        ),
        "init/loaded_tensors": (INT, "count", "tensors loaded from a local checkpoint"),
        "init/head_reset": (INT, "0/1", "1 when the checkpoint's head was dropped and re-created"),
        "init/resampled": (INT, "count", "tensors timm resampled to this img_size"),
        "start/stage": (S, "", "the earlier stage this trial starts from"),
        "start/trial_id": (S, "", "the earlier stage's trial whose checkpoint it starts from"),
        "start/checkpoint": (S, "", "path of that checkpoint"),
    },
)


class UpstreamStageError(RuntimeError):
    """The earlier stage this trial starts from left it no checkpoint (it failed, or saved none)."""


def start_model(cfg: TrialConfig, num_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """The trial's model with its starting weights, and the metrics of the module docstring."""
    pretrained = cfg.model.pretrained
    local = [pretrained] if isinstance(pretrained, str) else []
    if cfg.start is not None:
        local.append(_upstream_checkpoint(cfg.start))
    if cfg.finetune.checkpoint:
        local.append(cfg.finetune.checkpoint)
    # Local files go through load_weights here (not create_model) so the trial can report what
    # was loaded and whether the head was re-created.
    model_cfg = cfg.model.model_copy(update={"pretrained": pretrained is True})
    model = create_model(model_cfg, num_classes, dynamic_img_size=needs_dynamic_img_size(cfg))
    reports = [load_weights(model, path) for path in local]
    metrics = _metrics(pretrained is True, reports)
    if cfg.start is not None:
        metrics.update(
            {
                "start/stage": cfg.start.stage,
                "start/trial_id": cfg.start.trial_id,
                "start/checkpoint": cfg.start.checkpoint,
            }
        )
    return model, metrics


def _upstream_checkpoint(start: StartConfig) -> str:
    if start.checkpoint is None:
        who = f"trial {start.trial_id} of " if start.trial_id else ""
        raise UpstreamStageError(
            f"start: {who}stage {start.stage!r} left no checkpoint to start from "
            f"({start.error or 'no reason recorded'}); fix or re-run that stage"
        )
    return start.checkpoint


def _metrics(from_hub: bool, reports: list[LoadReport]) -> dict[str, Any]:
    return {
        "init/from_weights": int(from_hub or bool(reports)),
        "init/loaded_tensors": sum(r.loaded for r in reports) if reports else None,
        "init/head_reset": int(any(r.head_reset for r in reports)),
        "init/resampled": sum(len(r.resampled) for r in reports),
    }
