"""Repeats pooled into groups (`orchestrator.report.groups`): n, mean, std, 95% CI per metric."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from orchestrator.report import groups
from orchestrator.report.groups import group_labels, mean_ci, overlaps
from orchestrator.report.recommendations import recommendations
from orchestrator.report.tables import load_tables, trial_view
from tests.report_tables import SEED_LRS, write_seeds


@pytest.fixture(scope="module")
def trials(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    out = write_seeds(tmp_path_factory.mktemp("g") / "out", np.random.default_rng(0), seeds=24)
    return pd.read_parquet(out / "trials")


def test_seeds_pool_into_one_group_per_learning_rate(trials: pd.DataFrame) -> None:
    g = groups(trials)
    assert len(trials) == 192
    assert len(g) == 8 and set(g["n"]) == {24}
    assert sorted(g["optim.lr"]) == sorted(SEED_LRS)
    assert "seed" not in g.columns
    one = trials[trials["optim.lr"] == 1e-3]["best/val/acc"]
    row = g[g["optim.lr"] == 1e-3].iloc[0]
    assert row["best/val/acc mean"] == pytest.approx(one.mean())
    assert row["best/val/acc std"] == pytest.approx(one.std(ddof=1))
    half = stats.t.ppf(0.975, 23) * one.std(ddof=1) / math.sqrt(24)
    assert row["best/val/acc ci95_lo"] == pytest.approx(one.mean() - half)
    assert row["best/val/acc ci95_hi"] == pytest.approx(one.mean() + half)
    assert row["trial_ids"].count(",") == 23


def test_group_by_names_the_pooled_keys(trials: pd.DataFrame) -> None:
    g = groups(trials, group_by="seed,optim.lr")
    assert len(g) == 1 and g["n"].iloc[0] == 192
    by_lr = groups(trials, group_by="optim.lr")  # seeds kept apart, learning rates pooled
    assert len(by_lr) == 24 and set(by_lr["n"]) == {8}
    with pytest.raises(ValueError, match="names no key"):
        groups(trials, group_by=" , ")


def test_labels_name_the_group_not_the_seed(trials: pd.DataFrame) -> None:
    labels = group_labels(trials)
    assert labels.nunique() == 8
    assert not labels.str.contains("seed").any()
    assert "vit_tiny_patch16_224 lr=0.001" in set(labels)


def test_one_trial_has_a_mean_but_no_interval() -> None:
    n, mean, std, lo, hi = mean_ci([0.5, float("nan")])
    assert (n, mean) == (1, 0.5) and all(math.isnan(x) for x in (std, lo, hi))
    assert overlaps((0.1, 0.2), (0.15, 0.3)) and not overlaps((0.1, 0.2), (0.25, 0.3))
    assert overlaps((0.1, float("nan")), (0.5, 0.6))  # unknown: cannot be told apart


def test_recommendations_use_groups_and_say_when_they_tie(tmp_path) -> None:
    rng = np.random.default_rng(0)
    out = write_seeds(tmp_path / "out", rng, lrs=(1e-3, 1.1e-3, 1e-1), seeds=5)
    lines = recommendations(trial_view(load_tables(out)))
    assert lines[0].startswith("Best group by mean best/val/acc: ")
    assert "n = 5" in lines[0]
    # 1e-3 and 1.1e-3 peak alike (spread 1.5 points, 5 seeds): their intervals overlap.
    assert lines[1].startswith("Cannot be told apart from the best")
    assert "lr=0.1" not in lines[1]
    assert not any("seed=" in line for line in lines)
