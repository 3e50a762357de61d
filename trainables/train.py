"""`train`: a model from random init (or `model.pretrained`) trained on the dataset, profiled."""

from __future__ import annotations

from typing import Any

from trainables.models import create_model
from trainables.profiling import static_profile
from trainables.trial_config import TrialConfig
from trainables.trial_session import Reporter, fit, prepare


def run(config: dict[str, Any], reporter: Reporter) -> None:
    cfg = TrialConfig.model_validate(config)
    ctx = prepare(cfg)
    model = create_model(cfg.model, ctx.data.num_classes)
    static, tables = static_profile(model, cfg, ctx.device)
    fit(ctx, model, reporter, static_metrics=static, tables=tables)
