"""`stages:`: merging, validation errors, trial linking by match keys, best-checkpoint choice."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from orchestrator.stages import (
    START_KEY,
    CheckpointLookup,
    StageCheckpoint,
    build_stages,
    collect_checkpoints,
    run_stages,
)
from orchestrator.sweep_schema import SweepError, apply_smoke, parse_sweep_text

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
    pretrain, finetune = build_stages(sweep())
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


def test_smoke_reaches_keys_a_stage_sets_itself() -> None:
    _, finetune = build_stages(sweep(smoke=True))
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
    stages = build_stages(sweep(text), adjust=no_pretrained)
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
        (("- name: finetune", "- name: 'fine tune'"), r"stages\[1\]\.name: give each stage a name"),
        (("optim: {lr: 1.0e-4", "optim: {lr: -1"), r"(?s)stages\[1\] \(finetune\).*optim\.lr"),
        (("optim: {lr: 1.0e-4", "optim: {bogus: 1, lr: 1"), r"optim\.bogus: unknown key"),
        (
            ("metric: val/loss", "metrc: val/loss"),
            r"(?s)invalid `from`.*from\.metrc: unknown key \(accepted: stage, metric",
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
    with pytest.raises(SweepError, match=message):
        build_stages(sweep(TWO_STAGES.replace(*edit)))


def test_producer_metric_set_by_user_must_agree() -> None:
    text = TWO_STAGES.replace(
        "    dataset: {name: synthetic",
        "    checkpoint: {metric: val/acc}\n    dataset: {name: synthetic",
    )
    with pytest.raises(SweepError, match=r"from\.metric: 'val/loss', but stage 'pretrain' ranks"):
        build_stages(sweep(text))


def test_linked_stage_cannot_search_the_whole_model_mapping() -> None:
    text = TWO_STAGES.replace(
        "search: {optim.weight_decay: null}",
        "search: {optim.weight_decay: null, model: {grid: [{name: resnet18}]}}",
    )
    with pytest.raises(SweepError, match=rf"sets {START_KEY} per trial.*'model'"):
        build_stages(sweep(text))


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
        error=None if path else "RuntimeError: boom",
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
    assert lookup({"model": {"name": "vit"}}) == "/b"
    assert lookup({"model": {"name": "swin"}}) == "/c"
    assert (
        CheckpointLookup("pretrain", ["model.name"], "min", CANDIDATES)({"model": {"name": "vit"}})
        == "/a"
    )
    assert (
        CheckpointLookup("pretrain", [], "max", CANDIDATES)({"model": {"name": "resnet"}}) == "/b"
    )


def test_lookup_without_a_checkpoint_names_the_reason_instead_of_random_init() -> None:
    lookup = CheckpointLookup(
        stage="pretrain", match=["model.name"], mode="max", candidates=CANDIDATES
    )
    marker = lookup({"model": {"name": "deit"}})
    assert "no checkpoint from stage 'pretrain'" in marker and "model.name='deit'" in marker
    assert "boom" in marker
    assert "none ran" in lookup({"model": {"name": "bit"}})


def test_run_stages_links_each_trial_to_its_own_producer() -> None:
    from ray.tune.search.variant_generator import generate_variants

    stages = build_stages(sweep())
    seen: list[tuple[str, dict[str, Any]]] = []

    def run_one(stage: Any, overrides: dict[str, Any]) -> str:
        seen.append((stage.name, overrides))
        return f"outcome-{stage.name}"

    def collect(outcome: str, metric: str, mode: str) -> list[StageCheckpoint]:
        assert (outcome, metric, mode) == ("outcome-pretrain", "val/loss", "min")
        return [
            ck("p1", "/r18-good", 0.2, model__name="resnet18"),
            ck("p2", "/r18-bad", 0.9, model__name="resnet18"),
            ck("p3", "/tiny", 0.4, model__name="test_resnet"),
        ]

    assert run_stages(stages, run_one, collect) == ["outcome-pretrain", "outcome-finetune"]
    assert [name for name, _ in seen] == ["pretrain", "finetune"] and seen[0][1] == {}
    space = {"model": {"name": {"grid_search": ["resnet18", "test_resnet"]}}}
    space["model"]["pretrained"] = seen[1][1][START_KEY]
    resolved = {
        v[1]["model"]["name"]: v[1]["model"]["pretrained"] for v in generate_variants(space)
    }
    assert resolved == {"resnet18": "/r18-good", "test_resnet": "/tiny"}


def test_collect_checkpoints_reads_best_checkpoint_per_trial(tmp_path: Any) -> None:
    def result(tid: str, scores: list[float], error: Exception | None = None) -> Any:
        cks = [
            (SimpleNamespace(path=str(tmp_path / f"{tid}{i}")), {"val/acc": s})
            for i, s in enumerate(scores)
        ]
        return SimpleNamespace(
            config={"model": {"name": tid}},
            metrics={"trial_id": tid},
            path=str(tmp_path / tid),
            best_checkpoints=cks,
            error=error,
        )

    got = collect_checkpoints(
        [result("x", [0.3, 0.8, 0.5]), result("y", [], RuntimeError("oom"))], "val/acc", "max"
    )
    assert got[0].path == str(tmp_path / "x1" / "model.safetensors") and got[0].score == 0.8
    assert got[1].path is None and "oom" in (got[1].error or "")
    low = collect_checkpoints([result("x", [0.3, 0.8, 0.5])], "val/acc", "min")
    assert low[0].score == 0.3
