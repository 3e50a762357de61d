"""`train`: a model from random init (or `model.pretrained`) trained on the dataset, profiled."""

from __future__ import annotations

from typing import Any

from trainables.config import TrialConfig
from trainables.loop.fit import fit
from trainables.loop.profiling import needs_dynamic_img_size, static_profile
from trainables.loop.reporting import Reporter
from trainables.loop.setup import TrialSetup
from trainables.models.create import create_model


def run(config: dict[str, Any], reporter: Reporter) -> None:
    cfg = TrialConfig.model_validate(config)
    setup = TrialSetup.begin(cfg)
    model = create_model(cfg.model, setup.num_classes, dynamic_img_size=needs_dynamic_img_size(cfg))
    ctx = setup.with_model(model)
    facts, tables = static_profile(model, cfg, ctx.device)
    fit(ctx, model, reporter, facts={**facts, **ctx.facts()}, tables=tables)
