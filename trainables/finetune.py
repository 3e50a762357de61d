"""`finetune`: train a model that starts from weights, with a new head for this dataset.

Weights come from `model.pretrained` (the hub, or a local safetensors/torch file) or
`finetune.checkpoint`, or from an earlier stage's best checkpoint (`start:`, set by `orchestrator/driver/stages.py`);
`trainables.models.start_weights` documents the `init/*` keys that record which. The head is re-created
when the number of classes differs. `finetune.freeze_backbone: true` trains the head alone (a
linear probe); false trains everything. Phase 2 of `python -m orchestrator train --phase 2`.

A finetune trial without any weights (`pretrained: false`, no checkpoint, e.g. after
--no-pretrained) still runs, from random init, and says so with `init/from_weights` = 0.
"""

from __future__ import annotations

import warnings
from typing import Any

from trainables.config import TrialConfig
from trainables.loop.fit import fit
from trainables.loop.profiling import static_profile
from trainables.loop.reporting import Reporter
from trainables.loop.setup import TrialSetup
from trainables.models.heads import freeze_backbone
from trainables.models.start_weights import start_model


def run(config: dict[str, Any], reporter: Reporter) -> None:
    cfg = TrialConfig.model_validate(config)
    setup = TrialSetup.begin(cfg)
    model, init = start_model(cfg, setup.num_classes)
    if not init["init/from_weights"]:
        warnings.warn(
            "finetune: no weights to start from (model.pretrained is false and no "
            "finetune.checkpoint); training from random init",
            stacklevel=1,
        )
    if cfg.finetune.freeze_backbone:
        freeze_backbone(model)
    ctx = setup.with_model(model)
    facts, tables = static_profile(model, cfg, ctx.device)
    fit(ctx, model, reporter, facts={**facts, **init, **ctx.facts()}, tables=tables)
