"""Multi-objective search: the searcher sees per-trial facts; the Pareto front; seeds; cost."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.driver.objectives import (
    COST,
    FRONT,
    add_trial_end_facts,
    cost_usd,
    front_mask,
    mark_pareto_front,
)
from orchestrator.driver.schema import CostConfig, SweepError, parse_sweep_text
from orchestrator.tables import PartitionedTable
from trainables.loop.reporting import FACTS_KEY, FINAL_KEY

BASE = "name: s\ntrainable: train\ndataset: {name: digits}\n"
OPTUNA = (
    BASE
    + "search:\n  algo: optuna\n  objectives: {val/acc: max, latency/b1_ms_p50: min}\n"
    + "  seed: 3\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n  model.img_size: {choice: [32, 48]}\n"
)


def test_search_keys_split_from_the_searched_keys() -> None:
    sweep = parse_sweep_text(OPTUNA)
    assert set(sweep.search) == {"optim.lr", "model.img_size"}
    assert sweep.searcher.algo == "optuna" and sweep.searcher.seed == 3
    assert sweep.searcher.objectives == {"val/acc": "max", "latency/b1_ms_p50": "min"}
    # A mapping under `seed` searches the trial's own seed; a number seeds the sampler.
    both = parse_sweep_text(BASE + "search: {seed: {grid: [0, 1]}}\n")
    assert "seed" in both.search and both.searcher.seed is None
    # What a stage re-validates (the dumped sweep) keeps both.
    again = parse_sweep_text(__import__("yaml").safe_dump(sweep.model_dump(mode="json")))
    assert again.searcher == sweep.searcher and set(again.search) == set(sweep.search)


@pytest.mark.parametrize(
    ("tail", "needle"),
    [
        ("search: {algo: optuna, optim.lr: {uniform: [0.1, 0.2]}}\n", "needs objectives"),
        (
            "search: {algo: optuna, objectives: {val/acc: max}, optim.lr: {grid: [0.1, 0.2]}}\n",
            "write them as choice",
        ),
        ("search: {algo: best, optim.lr: {grid: [0.1]}}\n", "search"),
        ("cost: {}\n", "usd_per_hour"),
    ],
)
def test_bad_searcher_or_cost_names_the_key(tail: str, needle: str) -> None:
    with pytest.raises(SweepError, match=needle):
        parse_sweep_text(BASE + tail)


def test_front_mask_max_and_min() -> None:
    rows = [
        {"acc": 0.9, "ms": 2.0},  # front: best accuracy
        {"acc": 0.8, "ms": 1.0},  # front: fastest
        {"acc": 0.8, "ms": 1.5},  # beaten by the second
        {"acc": None, "ms": 0.1},  # no objective: never on the front
        {"acc": 0.99, "ms": 0.1, "status": "ERROR"},  # did not finish
    ]
    assert front_mask(rows, {"acc": "max", "ms": "min"}) == [True, True, False, False, False]


def test_mark_pareto_front_writes_the_column(tmp_path: Path) -> None:
    table = PartitionedTable(tmp_path, "trials")
    for tid, acc, ms in [("a", 0.9, 2.0), ("b", 0.5, 3.0)]:
        table.write_part(f"s__{tid}", [{"trial_id": tid, "val/acc": acc, "lat": ms}])
    assert mark_pareto_front(tmp_path, "s", ["a", "b"], {"val/acc": "max", "lat": "min"}) == 1
    import pandas as pd

    df = pd.read_parquet(tmp_path / "trials").set_index("trial_id")
    assert df[FRONT].to_dict() == {"a": True, "b": False}


def test_cost_follows_wall_time_and_resources() -> None:
    assert cost_usd(3600, CostConfig(usd_per_hour=3.0), {"CPU": 4}) == pytest.approx(3.0)
    per = CostConfig(usd_per_gpu_hour=2.0, usd_per_cpu_hour=0.1)
    assert cost_usd(1800, per, {"CPU": 4, "GPU": 2}) == pytest.approx(0.5 * (4.0 + 0.4))
    final = {FINAL_KEY: True, FACTS_KEY: {"time/total_s": 36.0}}
    add_trial_end_facts(final, CostConfig(usd_per_hour=3.0), {"CPU": 1})
    assert final[FACTS_KEY][COST] == pytest.approx(0.03)
    # No price: no column at all, not a zero.
    bare = {FINAL_KEY: True, FACTS_KEY: {"time/total_s": 36.0}}
    add_trial_end_facts(bare, None, {"CPU": 1})
    assert COST not in bare[FACTS_KEY]


def _drive(searcher: object, n: int, facts_only: bool = True) -> list[dict]:
    """Ask `searcher` for n configs, completing each as Tune would (a fact in the first result)."""
    configs = []
    for i in range(n):
        tid = f"t{i}"
        config = searcher.suggest(tid)  # type: ignore[attr-defined]
        configs.append(config)
        first = {
            "val/acc": 0.1 * i,
            "training_iteration": 1,
            f"{FACTS_KEY}/latency/b1_ms_p50": 1.0 + i,
        }
        searcher.on_trial_result(tid, first)  # type: ignore[attr-defined]
        final = {"val/acc": 0.1 * i, "training_iteration": 2, FINAL_KEY: True}
        searcher.on_trial_complete(tid, result=final)  # type: ignore[attr-defined]
    return configs


def test_optuna_sees_each_objective_and_repeats_with_its_seed() -> None:
    pytest.importorskip("optuna")
    from orchestrator.driver.search_space import param_space
    from orchestrator.driver.searchers import search_alg

    sweep = parse_sweep_text(OPTUNA.replace("seed: 3", "seed: 3\n  n_startup_trials: 4"))
    runs = []
    for _ in range(2):
        searcher = search_alg(sweep)
        searcher.set_search_properties(None, None, param_space(sweep))
        runs.append((searcher, _drive(searcher, 4)))
    (first, a), (_, b) = runs
    assert a == b  # the start-up trials repeat with the seed
    values = [t.values for t in first._ot_study.trials]
    assert values == [[0.1 * i, 1.0 + i] for i in range(4)]  # both objectives reached Optuna
    assert len(first._ot_study.best_trials) >= 1


def test_random_search_repeats_with_its_seed() -> None:
    from orchestrator.driver.search_space import param_space
    from orchestrator.driver.searchers import search_alg

    text = BASE + "num_samples: 4\nsearch:\n  seed: 5\n  optim.lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
    sweep = parse_sweep_text(text)

    def draws() -> list[float]:
        gen = search_alg(sweep)
        spec = {"run": lambda config: None, "config": param_space(sweep), "num_samples": 4}
        gen.add_configurations({"x": spec})
        return [gen.next_trial().config["optim"]["lr"] for _ in range(4)]

    first, again = draws(), draws()
    assert first == again and len(set(first)) == 4
