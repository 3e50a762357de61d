"""Building a trial's context and model the way a trainable does, for tests that call `fit`."""

from __future__ import annotations

from torch import nn

from trainables.models import create_model
from trainables.trial_config import TrialConfig
from trainables.trial_setup import TrialContext, TrialSetup


def prepared(cfg: TrialConfig) -> tuple[TrialContext, nn.Module]:
    setup = TrialSetup.begin(cfg)
    model = create_model(cfg.model, setup.num_classes)
    return setup.with_model(model), model
