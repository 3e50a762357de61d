"""Building a trial's context and model the way a trainable does, for tests that call `fit`."""

from __future__ import annotations

from torch import nn

from trainables.config import TrialConfig
from trainables.loop.setup import TrialContext, TrialSetup
from trainables.models.create import create_model


def prepared(cfg: TrialConfig) -> tuple[TrialContext, nn.Module]:
    setup = TrialSetup.begin(cfg)
    model = create_model(cfg.model, setup.num_classes)
    return setup.with_model(model), model
