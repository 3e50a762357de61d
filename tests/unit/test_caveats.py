"""Numbers that mean nothing are flagged: a --no-pretrained LoRA sweep at chance accuracy warns in
the end-of-run summary and in the report's recommendations, which say why they cannot be trusted
and never set trials of different stages against each other."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from orchestrator.driver import run_summary
from orchestrator.driver.schema import validate_sweep_dict
from orchestrator.driver.stages import build_plan
from orchestrator.driver.sweep_runner import SweepOutcome
from orchestrator.report import columns as C
from orchestrator.report.caveats import trial_caveats
from orchestrator.report.recommendations import grouped_recommendations

SUBS = '["model.pretrained: true -> false (hub unreachable; vit_tiny_patch16_224)"]'
SWEEP = {
    "name": "chance",
    "trainable": "train",
    "model": {"name": "vit_tiny_patch16_224", "img_size": 32},
    "dataset": {"name": "digits"},
    "stages": [
        {"name": "pretrain"},
        {
            "name": "lora",
            "trainable": "lora",
            "from": {"stage": "pretrain"},
            "search": {"lora.rank": {"grid": [0, 4, 8]}},
        },
    ],
}


def trials() -> pd.DataFrame:
    base = {"sweep": "chance", "dataset.name": "digits", "status": "TERMINATED"}
    rows = [
        {
            **base,
            "trial_id": "a_0",
            "stage": "pretrain",
            "trainable": "train",
            "lora.rank": None,
            "best/val/acc": 0.93,
            "time/epoch_s": 9.4,
            "time/lock_wait_s": 7.75,
            "substitutions": "[]",
        },
    ]
    for i, (rank, acc, epoch_s) in enumerate([(0, 0.095, 0.9), (4, 0.091, 0.5), (8, 0.086, 0.6)]):
        rows.append(
            {
                **base,
                "trial_id": f"b_{i}",
                "stage": "lora",
                "trainable": "lora",
                "lora.rank": rank,
                "best/val/acc": acc,
                "time/epoch_s": epoch_s,
                "params/trainable_pct": 100.0 if rank == 0 else rank / 4,
                "substitutions": SUBS,
                "data/num_classes": 10,
            }
        )
    return pd.DataFrame(rows)


def test_each_caveat_names_its_reason() -> None:
    df = trials()
    flags = [[c.flag for c in trial_caveats(r)] for _, r in df.iterrows()]
    assert flags[0] == ["lock wait"]  # 7.75 s of a 9.4 s epoch
    assert flags[1:] == [["chance", "substituted"]] * 3


def test_recommendations_say_why_they_cannot_be_trusted_and_stay_within_a_stage() -> None:
    view = trials().assign(**{C.LABEL: lambda d: d["trial_id"]})
    groups = dict(grouped_recommendations(view))
    assert set(groups) == {"stage pretrain (train)", "stage lora (lora)"}
    lora = groups["stage lora (lora)"]
    assert "cannot be trusted" in lora[0] and "chance" in lora[0]
    assert any("--no-pretrained" in line or "pretrained: true -> false" in line for line in lora)
    assert not any("a_0" in line for line in lora)  # the pretraining trial is not compared here
    assert any("lock" in line for line in groups["stage pretrain (train)"])


def test_summary_is_one_table_with_a_stage_column_and_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = trials()
    plan = build_plan(validate_sweep_dict(SWEEP, source="test"))
    monkeypatch.setattr(
        run_summary, "trials_frame", lambda out, name, ids: df[df["trial_id"].isin(ids)]
    )
    outcomes = [
        SweepOutcome(tmp_path, ids, {}, None, statuses=dict.fromkeys(ids, "TERMINATED"))
        for ids in (["a_0"], ["b_0", "b_1", "b_2"])
    ]
    console = Console(record=True, width=220)
    run_summary.print_run_summary(
        plan, outcomes, tmp_path, tracking_uri=f"sqlite:///{tmp_path / 'x.db'}", console=console
    )
    text = console.export_text()
    assert text.count("sweep chance") == 1 and "(stages: pretrain, lora)" in text
    header = next(line for line in text.splitlines() if line.strip().startswith("trial"))
    assert header.split()[:3] == ["trial", "stage", "lora.rank"] and "caveats" in header
    assert "warning: trial b_1: chance" in text
    assert " 4.0 " not in text and " 4 " in text  # searched integers print as integers
