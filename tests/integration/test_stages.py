"""`stages:`: typed stage entries, merging, errors by key path, each trial's `start`, report labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.driver.schema import SweepError, parse_sweep_text
from orchestrator.driver.smoke import apply_smoke
from orchestrator.driver.stages import (
    START_KEY,
    CheckpointLookup,
    StageCheckpoint,
    build_plan,
    collect_checkpoints,
    run_stages,
)
from orchestrator.report import columns as C
from orchestrator.report.tables import Tables, trial_view
from trainables.config import StartConfig

TWO_STAGES = """
name: two
model: {name: resnet18, img_size: 32}
dataset: {name: digits}
optim: {lr: 1.0e-3, epochs: 5}
search:
  model.name: {grid: [resnet18, test_resnet]}
  optim.weight_decay: {grid: [0.0, 0.05]}
stages:
  - name: pretrain
    trainable: train
    dataset: {name: synthetic, num_classes: 5}
  - name: finetune
    trainable: finetune
    from: {stage: pretrain, metric: val/loss, mode: min}
    optim: {lr: 1.0e-4, epochs: 10}
    search: {optim.weight_decay: null}
"""


def sweep(text: str = TWO_STAGES, *, smoke: bool = False) -> Any:
    s = parse_sweep_text(text, source="t.yaml")
    return apply_smoke(s) if smoke else s


def test_stage_keys_merge_over_the_sweep() -> None:
    pretrain, finetune = build_plan(sweep())
    assert (pretrain.name, pretrain.sweep.stage, pretrain.sweep.trainable) == (
        "pretrain",
        "pretrain",
        "train",
    )
    assert pretrain.sweep.dataset.name == "synthetic" and pretrain.sweep.dataset.num_classes == 5
    assert pretrain.sweep.optim.epochs == 5 and pretrain.sweep.model.img_size == 32
    assert finetune.sweep.dataset.name == "digits"  # not the pretrain stage's: both merge the sweep
    assert (finetune.sweep.optim.lr, finetune.sweep.optim.epochs) == (1e-4, 10)
    assert set(finetune.sweep.search) == {"model.name"}  # `key: null` dropped weight_decay
    # Shared grid key: each model fine-tunes its own pretraining; the producer ranks by the
    # consumer's metric so its kept checkpoint is the one the consumer wants.
    assert finetune.match == ["model.name"]
    assert (pretrain.sweep.checkpoint.metric, pretrain.sweep.checkpoint.mode) == ("val/loss", "min")
    # The starting checkpoint is set per trial, never searched.
    assert finetune.sweep.start is None and "start" not in finetune.sweep.search


def test_a_sweep_without_stages_is_a_plan_of_one() -> None:
    plain = sweep("name: one\nsearch: {optim.lr: {grid: [0.1, 0.01]}}\n")
    (only,) = build_plan(plain)
    assert only.name is None and only.source is None and only.sweep == plain


def test_stage_name_alone_is_a_from() -> None:
    text = TWO_STAGES.replace(
        "from: {stage: pretrain, metric: val/loss, mode: min}", "from: pretrain"
    )
    spec = sweep(text).stages[1]
    assert spec.from_ is not None and (spec.from_.stage, spec.from_.metric) == (
        "pretrain",
        "val/acc",
    )


def test_smoke_reaches_keys_a_stage_sets_itself() -> None:
    _, finetune = build_plan(sweep(smoke=True))
    assert finetune.sweep.smoke and finetune.sweep.optim.epochs == 1
    assert finetune.sweep.dataset.subset is not None


def test_adjust_runs_on_every_stage() -> None:
    def no_pretrained(s: Any) -> Any:
        out = s.model_copy(deep=True)
        out.model.pretrained = False
        return out

    text = TWO_STAGES.replace(
        "trainable: finetune", "trainable: finetune\n    model: {pretrained: true}"
    )
    stages = build_plan(sweep(text), adjust=no_pretrained)
    assert [s.sweep.model.pretrained for s in stages] == [False, False]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("stage: pretrain", "stage: finetune"), r"'finetune' is not an earlier stage"),
        (
            ("stage: pretrain", "stage: nowhere"),
            r"stages\[1\] \(finetune\)\.from\.stage: 'nowhere'",
        ),
        (("- name: finetune", "- name: pretrain"), r"'pretrain' is used by an earlier stage"),
        (
            ("- name: finetune", "- name: 'fine tune'"),
            r"stages\[1\]\.name: give each stage a name.*\(got 'fine tune'\)",
        ),
        (("- name: finetune", "- nam: finetune"), r"stages\[1\]\.name: Field required"),
        (("optim: {lr: 1.0e-4", "optim: {lr: -1"), r"(?s)stages\[1\] \(finetune\).*optim\.lr"),
        (("optim: {lr: 1.0e-4", "optim: {bogus: 1, lr: 1"), r"optim\.bogus: unknown key"),
        (
            ("metric: val/loss", "metrc: val/loss"),
            r"stages\[1\]\.from\.metrc: unknown key \(accepted here: stage, metric, mode, match\)",
        ),
        (
            ("trainable: finetune", "trainabel: finetune"),
            r"stages\[1\]\.trainabel: unknown key \(accepted here: name, from, trainable, model",
        ),
        (("trainable: finetune", "stages: []"), r"stages\[1\]\.stages: unknown key"),
        (
            ("mode: min}", "mode: min, match: [optim.lrr]}"),
            r"stages\[1\] \(finetune\)\.from\.match: \['optim\.lrr'\] are not trial keys",
        ),
        (
            ("trainable: finetune", "start: {stage: pretrain}"),
            r"stages\[1\]\.start: unknown key",
        ),
        (
            (
                "    dataset: {name: synthetic",
                "    checkpoint: {enabled: false}\n    dataset: {name: synthetic",
            ),
            r"checkpoint\.enabled: false",
        ),
    ],
)
def test_bad_stages_fail_naming_the_stage_and_key(edit: tuple[str, str], message: str) -> None:
    text = TWO_STAGES.replace(*edit)
    assert text != TWO_STAGES
    with pytest.raises(SweepError, match=message):
        build_plan(sweep(text))


@pytest.mark.parametrize("command", ["validate", "run"])
def test_cli_exits_2_on_an_unknown_stage_key(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(TWO_STAGES.replace("trainable: finetune", "trainabel: finetune"))
    args = (
        ["validate", str(path)]
        if command == "validate"
        else [str(path), "--output", str(tmp_path / "out")]
    )
    assert main(args) == 2
    assert "stages[1].trainabel: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_start_is_not_a_sweep_key_nor_searched() -> None:
    with pytest.raises(SweepError, match=r"start: start is set per trial"):
        sweep("start: {stage: x, checkpoint: /tmp/w.safetensors}\n")
    with pytest.raises(SweepError, match=r"search\.start\.checkpoint: start is set per trial"):
        sweep("search: {start.checkpoint: {grid: [/a, /b]}}\n")


def test_producer_metric_set_by_user_must_agree() -> None:
    text = TWO_STAGES.replace(
        "    dataset: {name: synthetic",
        "    checkpoint: {metric: val/acc}\n    dataset: {name: synthetic",
    )
    with pytest.raises(SweepError, match=r"from\.metric: 'val/loss', but stage 'pretrain' ranks"):
        build_plan(sweep(text))


def test_linked_stage_may_search_the_whole_model_mapping() -> None:
    # The start is its own key now: searching `model` no longer collides with it.
    text = TWO_STAGES.replace(
        "search: {optim.weight_decay: null}",
        "search: {optim.weight_decay: null, model.name: null, model: {grid: [{name: resnet18}]}}",
    )
    _, finetune = build_plan(sweep(text))
    assert "model" in finetune.sweep.search and finetune.source is not None


def ck(name: str, path: str | None, score: float | None, **config: Any) -> StageCheckpoint:
    nested: dict[str, Any] = {}
    for key, value in config.items():
        section, leaf = key.split("__")
        nested.setdefault(section, {})[leaf] = value
    return StageCheckpoint(
        trial_id=name,
        config=nested,
        path=path,
        score=score,
        error=None if path else "it failed: RuntimeError: boom",
    )


CANDIDATES = [
    ck("a", "/a", 0.5, model__name="vit", optim__lr=1e-3),
    ck("b", "/b", 0.9, model__name="vit", optim__lr=1e-4),
    ck("c", "/c", 0.7, model__name="swin", optim__lr=1e-3),
    ck("d", None, None, model__name="deit", optim__lr=1e-3),
]


def test_lookup_takes_the_best_checkpoint_among_matching_trials() -> None:
    lookup = CheckpointLookup(
        stage="pretrain", match=["model.name"], mode="max", candidates=CANDIDATES
    )
    vit = lookup({"model": {"name": "vit"}})
    assert vit == {"stage": "pretrain", "trial_id": "b", "checkpoint": "/b", "error": None}
    assert StartConfig.model_validate(vit).checkpoint == "/b"  # what the trainable reads back
    assert lookup({"model": {"name": "swin"}})["checkpoint"] == "/c"
    low = CheckpointLookup("pretrain", ["model.name"], "min", CANDIDATES)
    assert low({"model": {"name": "vit"}})["trial_id"] == "a"
    anyone = CheckpointLookup("pretrain", [], "max", CANDIDATES)
    assert anyone({"model": {"name": "resnet"}})["checkpoint"] == "/b"


def test_failed_upstream_trial_gives_no_checkpoint_and_says_why() -> None:
    lookup = CheckpointLookup(
        stage="pretrain", match=["model.name"], mode="max", candidates=CANDIDATES
    )
    deit = StartConfig.model_validate(lookup({"model": {"name": "deit"}}))
    assert deit.checkpoint is None and deit.trial_id == "d" and deit.stage == "pretrain"
    assert deit.error is not None
    assert (
        "model.name='deit'" in deit.error and "trial d: it failed: RuntimeError: boom" in deit.error
    )
    nobody = StartConfig.model_validate(lookup({"model": {"name": "bit"}}))
    assert nobody.checkpoint is None and nobody.trial_id is None
    assert "no trial ran" in (nobody.error or "")


def test_stage_two_trials_get_start_from_their_own_upstream_trial() -> None:
    from ray.tune.search.variant_generator import generate_variants

    from orchestrator.driver.dotted_keys import set_path
    from orchestrator.driver.search_space import param_space

    stages = build_plan(sweep())
    seen: list[tuple[str, dict[str, Any]]] = []

    def run_one(stage: Any, overrides: dict[str, Any]) -> str:
        seen.append((stage.name, overrides))
        return f"outcome-{stage.name}"

    def collect(outcome: str, metric: str, mode: str) -> list[StageCheckpoint]:
        assert (outcome, metric, mode) == ("outcome-pretrain", "val/loss", "min")
        return [
            ck("p1", "/r18-good", 0.2, model__name="resnet18"),
            ck("p2", "/r18-bad", 0.9, model__name="resnet18"),
            ck("p3", None, None, model__name="test_resnet"),
        ]

    assert run_stages(stages, run_one, collect) == ["outcome-pretrain", "outcome-finetune"]
    assert [name for name, _ in seen] == ["pretrain", "finetune"] and seen[0][1] == {}
    # The finetune stage's own param space, as run_sweep builds it, resolved the way Tune does.
    space = param_space(stages[1].sweep)
    for key, value in seen[1][1].items():
        set_path(space, key, value)
    starts = {v["model"]["name"]: v[START_KEY] for _, v in generate_variants(space)}
    assert starts["resnet18"] == {
        "stage": "pretrain",
        "trial_id": "p1",
        "checkpoint": "/r18-good",
        "error": None,
    }
    assert starts["test_resnet"]["checkpoint"] is None
    assert "trial p3: it failed" in starts["test_resnet"]["error"]
    # Nothing else of the trial is touched: the start never hides in model.pretrained.
    assert {v["model"]["pretrained"] for _, v in generate_variants(space)} == {False}


def test_collect_checkpoints_takes_rays_best_checkpoint_per_trial(tmp_path: Path) -> None:
    from ray.tune import Checkpoint, Result

    def result(tid: str, scores: list[float], error: Exception | None = None) -> Result:
        cks = []
        for i, s in enumerate(scores):
            (tmp_path / f"{tid}{i}").mkdir()
            cks.append((Checkpoint(str(tmp_path / f"{tid}{i}")), {"val/acc": s}))
        return Result(
            metrics={"trial_id": tid, "config": {"model": {"name": tid}}},
            checkpoint=cks[-1][0] if cks else None,
            error=error,
            path=str(tmp_path / tid),
            best_checkpoints=cks,
        )

    got = collect_checkpoints(
        [
            result("x", [0.3, 0.8, 0.5]),
            result("y", [0.9], RuntimeError("oom\nCUDA out of memory")),
            result("z", []),
        ],
        "val/acc",
        "max",
    )
    assert got[0].path == str(tmp_path / "x1" / "model.safetensors") and got[0].score == 0.8
    assert got[0].config == {"model": {"name": "x"}} and got[0].error is None
    # A failed trial hands on nothing, even a checkpoint from before it failed.
    assert got[1].path is None and got[1].error == "it failed: CUDA out of memory"
    assert got[2].path is None and got[2].error == "it reported no checkpoint"
    low = collect_checkpoints([result("w", [0.3, 0.8, 0.5])], "val/acc", "min")
    assert low[0].score == 0.3 and low[0].path == str(tmp_path / "w0" / "model.safetensors")
    other = collect_checkpoints([result("v", [0.3])], "val/f1_macro", "max")
    assert other[0].path is None and "val/f1_macro" in (other[0].error or "")


def test_report_labels_show_what_was_searched_never_a_path(tmp_path: Path) -> None:
    dense_ck = "/results/_tune/prune-dense-20250101/train_abc/checkpoint_000000/model.safetensors"
    rows = [
        {
            C.SWEEP: "prune_recover",
            C.TRIAL_ID: "dense0",
            C.STAGE: "dense",
            "trainable": "train",
            C.MODEL_NAME: "vit_tiny_patch16_224",
            "model.pretrained": "false",
            "optim.lr": 1e-3,
            "dataset.root": "/data",
            C.PRUNE_METHOD: "unstructured",
            C.PRUNE_RATIO: 0.5,
            "best/val/acc": 0.8,
        }
    ]
    for i, (method, ratio) in enumerate(
        [(m, r) for m in ("unstructured", "structured") for r in (0.1, 0.5)]
    ):
        rows.append(
            {
                C.SWEEP: "prune_recover",
                C.TRIAL_ID: f"prune{i}",
                C.STAGE: "prune",
                "trainable": "prune_recover",
                C.MODEL_NAME: "vit_tiny_patch16_224",
                # A trial that starts from a file the old way, and the new start columns.
                "model.pretrained": dense_ck.replace("abc", f"abc{i}"),
                "finetune.checkpoint": f"./weights/{i}.pth",
                "start/checkpoint": dense_ck,
                "start/trial_id": "dense0",
                "start/stage": "dense",
                "optim.lr": 1e-4,
                "dataset.root": "/data",
                C.PRUNE_METHOD: method,
                C.PRUNE_RATIO: ratio,
                "best/val/acc": 0.7 - ratio / 10,
            }
        )
    view = trial_view(Tables(root=tmp_path, frames={C.TRIALS: pd.DataFrame(rows)}))
    labels = dict(zip(view[C.TRIAL_ID], view[C.LABEL], strict=True))
    assert labels["dense0"] == "vit_tiny_patch16_224 [dense]"
    assert labels["prune3"] == "vit_tiny_patch16_224 method=structured ratio=0.5 [prune]"
    for label in [*view[C.LABEL], *view[C.MODEL_LABEL]]:
        assert "/" not in label and "safetensors" not in label and "pretrained" not in label
