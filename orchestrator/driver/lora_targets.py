"""LoRA targets checked on the driver before Ray starts (and by `validate`): a trial would fail on them.

`lora.target_modules`: every name must match a layer of the model. The model is built on torch's
meta device (shapes only: no memory, no weights, no hub) to list its layers, so a typo fails the
sweep with exit 2 naming the name and the layers there are, instead of failing every trial.
"""

from __future__ import annotations

from typing import Any

from orchestrator.driver.schema import SweepConfig, SweepError

# The trainables that put LoRA adapters on the model (bench only with `model_as: lora`).
LORA_TRAINABLES = ("lora",)


def check_stage(sweep: SweepConfig) -> None:
    """SweepError when a stage's trials would fail on a setting checkable here."""
    if _uses_lora(sweep):
        _check_lora_targets(sweep)


def _uses_lora(sweep: SweepConfig) -> bool:
    if sweep.trainable in LORA_TRAINABLES:
        return True
    bench = getattr(sweep, "bench", None)
    return sweep.trainable == "bench" and getattr(bench, "model_as", None) == "lora"


def _target_lists(sweep: SweepConfig) -> list[Any]:
    searched = sweep.search.get("lora.target_modules")
    if searched is not None and searched.kind in ("grid", "choice"):
        return list(searched.value)
    return [sweep.lora.target_modules]


def _models(sweep: SweepConfig) -> list[Any]:
    """The model configs the trials build: the sweep's, or one per searched model name."""
    searched = sweep.search.get("model.name")
    if searched is not None and searched.kind in ("grid", "choice"):
        out = []
        for name in searched.value:
            m = sweep.model.model_copy(deep=True)
            m.name = str(name)
            out.append(m)
        return out
    whole = sweep.search.get("model")
    if whole is not None and whole.kind in ("grid", "choice"):
        return []  # whole model mappings: each trial checks its own
    return [sweep.model]


def _check_lora_targets(sweep: SweepConfig) -> None:
    lists = [t for t in _target_lists(sweep) if isinstance(t, list)]
    if not lists:
        return  # null (the model's default) or 'all-linear': nothing to misspell
    import torch

    from trainables.adapters.lora import resolve_targets
    from trainables.models.create import create_model

    num_classes = sweep.dataset.num_classes or 10
    for model_cfg in _models(sweep):
        shape_only = model_cfg.model_copy(update={"pretrained": False})
        try:
            with torch.device("meta"):
                model = create_model(shape_only, num_classes)
        except Exception:  # a model that cannot build on meta: its trials will say why
            continue
        for targets in lists:
            try:
                resolve_targets(model, targets)
            except ValueError as err:
                where = f"stage {sweep.stage!r}: " if sweep.stage else ""
                raise SweepError(f"{where}{err} (model {model_cfg.name})") from None
