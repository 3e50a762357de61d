"""`search.algo` -> Ray Tune's search algorithm: seeded random draws, or Optuna on objectives.

- `auto` / `random`: Tune's `BasicVariantGenerator` (grids crossed, random kinds drawn), seeded
  by `search.seed` (`random_state`): two runs with one seed draw the same configs.
- `optuna`: `ObjectiveSearch`, Ray Tune's `OptunaSearch` on `search.objectives` (lists of
  metrics and modes: two or more objectives search a Pareto front) with a `TPESampler` seeded by
  `search.seed`; its `n_startup_trials` random start-up trials repeat with the seed.

A trial reports its per-trial facts (latency, FLOPs, ...) once, with its first epoch, under the
facts key; its completing result (the trial-end report) repeats only the last epoch's metrics.
`ObjectiveSearch` keeps the latest value of each objective from every result of a trial and
hands them to Optuna when the trial completes, so no fact is sent twice to the sinks (no doubled
row in Parquet or point in MLflow). Tune's check that every result carries the search metrics is
turned off for such a sweep (`TUNE_DISABLE_STRICT_METRIC_CHECKING`): a fact is in the first
result only, an epoch metric in every one.
"""

from __future__ import annotations

import os
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from orchestrator.driver.schema import SweepConfig
from trainables.loop.reporting import FACTS_KEY


class ObjectiveSearch(OptunaSearch):
    """OptunaSearch that completes a trial with each objective's latest value from any of its
    results: epoch metrics at the top, per-trial facts under the facts key."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen: dict[str, dict[str, float]] = {}

    def _objectives(self) -> list[str]:
        metric = self.metric
        return list(metric) if isinstance(metric, list | tuple) else [metric] if metric else []

    def _remember(self, trial_id: str, result: dict[str, Any] | None) -> None:
        seen = self._seen.setdefault(trial_id, {})
        for name in self._objectives():
            for key in (name, f"{FACTS_KEY}/{name}"):
                value = (result or {}).get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    seen[name] = float(value)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._remember(trial_id, result)
        # One objective: Optuna records it per step; a fact is not in every result.
        if isinstance(self.metric, str) and self.metric not in result:
            return
        super().on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._remember(trial_id, result)
        seen = self._seen.pop(trial_id, {})
        if result is not None and not error:
            result = {**result, **seen}
        super().on_trial_complete(trial_id, result=result, error=error)


def search_alg(sweep: SweepConfig) -> Any:
    """The Tuner's `search_alg` for this sweep (None: Tune's own default, unseeded)."""
    searcher = sweep.searcher
    if searcher.algo == "optuna":
        import optuna

        objectives = dict(searcher.objectives or {})
        sampler_args: dict[str, Any] = {"seed": searcher.seed}
        if searcher.n_startup_trials is not None:
            sampler_args["n_startup_trials"] = searcher.n_startup_trials
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        names, modes = list(objectives), list(objectives.values())
        return ObjectiveSearch(
            metric=names if len(names) > 1 else names[0],
            mode=modes if len(modes) > 1 else modes[0],
            sampler=optuna.samplers.TPESampler(**sampler_args),
        )
    if searcher.seed is not None:
        from ray.tune.search import BasicVariantGenerator

        return BasicVariantGenerator(random_state=searcher.seed)
    return None
