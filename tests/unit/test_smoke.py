"""`--smoke` is one config transform: what a smoke run does differently is in the trial config."""

from __future__ import annotations

import ast
from pathlib import Path

from orchestrator.driver.schema import parse_sweep_text
from orchestrator.driver.smoke import apply_smoke
from orchestrator.driver.stages import build_plan

GOOD = "name: x\ntrainable: train\nmodel: {name: resnet18}\ndataset: {name: digits}\n"
FULL = """
name: full
trainable: prune_recover
optim: {epochs: 30, batch_size: 128}
profilers:
  latency: {input_sizes: [160, 224], batch_sizes: [8, 1, 32], warmup: 10, repeats: 50}
  flops: {input_sizes: [160, 224]}
prune:
  recover_epochs: 5
  sensitivity_ratios: [0.5, 0.1, 0.9, 0.3]
  sensitivity_max_batches: 10
search: {optim.lr: {grid: [0.1, 0.2]}}
"""


def test_smoke_shrinks_the_run_but_keeps_model_and_search() -> None:
    sweep = parse_sweep_text(GOOD + "optim: {epochs: 30}\nsearch: {optim.lr: {grid: [0.1, 0.2]}}\n")
    smoke = apply_smoke(sweep)
    assert smoke.smoke and smoke.optim.epochs == 1
    assert smoke.optim.max_train_batches == 3 and smoke.optim.max_val_batches == 2
    assert smoke.optim.batch_size == 4 and smoke.dataset.subset == 128
    assert smoke.model == sweep.model and smoke.search == sweep.search
    assert not sweep.smoke  # the original is untouched


def test_smoke_sets_in_config_what_the_trainables_used_to_decide() -> None:
    smoke = apply_smoke(parse_sweep_text(FULL))
    latency = smoke.profilers.latency
    assert latency is not None
    assert (latency.warmup, latency.repeats, latency.max_point_s) == (1, 3, 2.0)
    assert latency.batch_sizes == [1] and latency.input_sizes == [160]
    assert smoke.profilers.flops is not None and smoke.profilers.flops.input_sizes == [160]
    prune = smoke.prune
    assert prune.sensitivity_ratios == [0.1, 0.9]
    assert prune.sensitivity_samples == 32 and prune.sensitivity_max_batches is None
    assert prune.recover_epochs == 1
    assert apply_smoke(smoke) == smoke  # applying it again changes nothing


def test_smoke_keeps_settings_already_smaller() -> None:
    text = GOOD + "optim: {batch_size: 2, max_train_batches: 1}\nprune: {recover_epochs: 0}\n"
    smoke = apply_smoke(parse_sweep_text(text))
    assert smoke.optim.batch_size == 2 and smoke.optim.max_train_batches == 1
    assert smoke.prune.recover_epochs == 0


def test_smoke_reaches_every_stage_after_the_merge() -> None:
    text = FULL + "stages:\n  - {name: a}\n  - name: b\n    prune: {recover_epochs: 7}\n"
    text += "    profilers: {latency: {repeats: 40, batch_sizes: [4, 2]}}\n"
    _, b = build_plan(apply_smoke(parse_sweep_text(text)))
    assert b.sweep.smoke and b.sweep.prune.recover_epochs == 1
    assert b.sweep.profilers.latency is not None
    assert (b.sweep.profilers.latency.repeats, b.sweep.profilers.latency.batch_sizes) == (3, [2])


def test_no_trainable_reads_smoke() -> None:
    readers = []
    paths = sorted((Path(__file__).resolve().parents[2] / "trainables").rglob("*.py"))
    assert len(paths) > 20, "the trainables were not found"
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr == "smoke":
                readers.append(f"{path}:{node.lineno}")
    assert readers == [], f"trainables branch on cfg.smoke: {readers}"
