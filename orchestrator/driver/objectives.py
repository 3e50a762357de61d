"""What a sweep optimizes and what each trial cost: the Pareto front and `cost/usd`.

- `front_mask(rows, objectives)`: the trials no other trial beats on every objective (each `max`
  or `min`), marked `pareto/front` in the `trials` table after a sweep (`mark_pareto_front`).
  A trial that did not finish, or lacks an objective, is never on the front (its mark is false).
- `cost_usd(total_s, cost, demand)`: a trial's price from its wall time (`time/total_s`) and the
  resources it held (`orchestrator.workers.train_workers.trial_demand`): `usd_per_hour` per
  trial-hour plus `usd_per_gpu_hour` x GPUs plus `usd_per_cpu_hour` x CPU cores. Without a
  `cost:` section the column is absent, never zero.
- `TrialEndFacts`: adds `cost/usd` to the trial-end report before the sinks read it, so it lands
  once in `trials` and in MLflow, as every other trial-end fact.

No Ray import at module level: `validate` and the Ray-free `trial` command use these too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from orchestrator.driver.schema import CostConfig
from orchestrator.sinks.results import LoggerCallback
from orchestrator.tables import PartitionedTable
from profilers.metric_registry import B, F, declare
from trainables.loop.reporting import FACTS_KEY, FINAL_KEY

FRONT = "pareto/front"
COST = "cost/usd"

declare(
    __name__,
    {
        FRONT: (
            B,
            "",
            "no other finished trial of the sweep is as good on every search.objectives and "
            "better on one",
        ),
        COST: (
            F,
            "USD",
            "time/total_s x (cost.usd_per_hour + GPUs x usd_per_gpu_hour + CPUs x "
            "usd_per_cpu_hour); absent without a cost: section",
        ),
    },
)


def front_mask(rows: Sequence[dict[str, Any]], objectives: dict[str, str]) -> list[bool]:
    """For each row, whether it is Pareto-optimal for `objectives` (metric -> max | min)."""
    points: list[tuple[float, ...] | None] = []
    for row in rows:
        values = [row.get(k) for k in objectives]
        ok = row.get("status", "TERMINATED") == "TERMINATED" and all(
            isinstance(v, int | float) and not isinstance(v, bool) and v == v for v in values
        )
        # Every objective as "higher is better".
        signs = [1.0 if mode == "max" else -1.0 for mode in objectives.values()]
        points.append(
            tuple(s * float(v) for s, v in zip(signs, values, strict=True)) if ok else None
        )

    def beaten(p: tuple[float, ...]) -> bool:
        return any(
            q is not None and all(a >= b for a, b in zip(q, p, strict=True)) and q != p
            for q in points
        )

    return [p is not None and not beaten(p) for p in points]


def mark_pareto_front(
    output: Path, sweep_name: str, trial_ids: Sequence[str], objectives: dict[str, str]
) -> int:
    """Write `pareto/front` into the `trials` rows of `trial_ids`; returns how many are on it."""
    table = PartitionedTable(Path(output), "trials")
    parts = {t: f"{sweep_name}__{t}" for t in trial_ids}
    rows = {t: table.read_part(p) for t, p in parts.items()}
    found = [t for t in trial_ids if rows[t]]
    marks = front_mask([rows[t][0] for t in found], objectives)
    for trial_id, mark in zip(found, marks, strict=True):
        table.write_part(parts[trial_id], [{**r, FRONT: mark} for r in rows[trial_id]])
    return sum(marks)


def cost_usd(total_s: float, cost: CostConfig, demand: dict[str, float]) -> float:
    """Dollars for `total_s` seconds holding `demand` ({"CPU": n, "GPU": m})."""
    per_hour = (
        (cost.usd_per_hour or 0.0)
        + (cost.usd_per_gpu_hour or 0.0) * float(demand.get("GPU", 0.0))
        + (cost.usd_per_cpu_hour or 0.0) * float(demand.get("CPU", 0.0))
    )
    return float(total_s) / 3600.0 * per_hour


def add_trial_end_facts(
    result: dict[str, Any], cost: CostConfig | None, demand: dict[str, float]
) -> None:
    """`cost/usd` into a trial-end result's facts, in place (nothing without a price)."""
    if cost is None or not result.get(FINAL_KEY):
        return
    facts = result.get(FACTS_KEY)
    total = (facts or {}).get("time/total_s")
    if isinstance(total, int | float):
        facts[COST] = cost_usd(total, cost, demand)  # type: ignore[index]


class TrialEndFacts(LoggerCallback):
    """First among the Tune callbacks: what the driver derives from a trial-end report goes into
    it before the sinks read it (Tune hands every callback the same result dict)."""

    def __init__(self, cost: CostConfig | None, demand: dict[str, float]) -> None:
        self.cost = cost
        self.demand = dict(demand)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        add_trial_end_facts(result, self.cost, self.demand)
