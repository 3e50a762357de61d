"""Sweep files: bad input exits 2 naming the key and writes nothing; search spaces expand as written."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.driver.schema import SweepError, parse_sweep_text
from orchestrator.driver.search_space import expand, param_space

GOOD = "name: x\ntrainable: train\nmodel: {name: resnet18}\ndataset: {name: digits}\n"

BAD = {
    "unknown-key": (GOOD + "bogus_key: 1\n", "bogus_key"),
    "unknown-nested-key": (GOOD + "optim: {lr: 0.1, momentun: 0.9}\n", "optim.momentun"),
    "wrong-type": (GOOD + "optim: {epochs: many}\n", "optim.epochs"),
    "unknown-model": (
        "name: x\nmodel: {name: resnet_does_not_exist}\n",
        "model.name",
    ),
    "unknown-dataset": (GOOD.replace("digits", "mnist_typo"), "dataset.name"),
    "empty-grid": (GOOD + "search: {optim.lr: {grid: []}}\n", "search.optim.lr"),
    "bad-grid-value": (GOOD + "search: {optim.lr: {grid: [0.1, -1]}}\n", "search.optim.lr.grid[1]"),
    "unknown-search-key": (GOOD + "search: {optim.lrr: {grid: [0.1]}}\n", "search.optim.lrr"),
    "two-kinds": (GOOD + "search: {optim.lr: {grid: [0.1], uniform: [0, 1]}}\n", "search.optim.lr"),
    "loguniform-zero": (GOOD + "search: {optim.lr: {loguniform: [0, 1]}}\n", "search.optim.lr"),
    "malformed": ("name: x\n  trainable: [train\nmodel: {", "line 2"),
    "not-a-mapping": ("- just\n- a list\n", "mapping"),
    # Swin's 7x7 windows would be padded at 160 px (a 40-token grid): not the model.
    "padded-swin-profile": (
        "name: x\nmodel: {name: swin_t, img_size: 224}\nprofilers: {latency: {input_sizes: [224, 160]}}\n",
        "profilers.latency.input_sizes: 160 does not fit 'swin_t'",
    ),
    "hybrid-profile-size": (
        "name: x\nmodel: {name: vit_ti_r, img_size: 32}\nprofilers: {flops: {input_sizes: [48]}}\n",
        "profilers.flops.input_sizes: 48",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_sweep_exits_2_names_the_key_and_writes_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, key = BAD[case]
    sweep = tmp_path / "bad.yaml"
    sweep.write_text(text)
    out = tmp_path / "out"
    assert main([str(sweep), "--output", str(out)]) == 2
    assert not out.exists()
    assert key in capsys.readouterr().err


def test_unknown_model_suggests_close_names() -> None:
    with pytest.raises(SweepError, match=r"did you mean.*resnet18"):
        parse_sweep_text("model: {name: resnet19x}\n")


def test_unknown_key_lists_accepted_keys() -> None:
    with pytest.raises(SweepError, match=r"accepted here: .*batch_size"):
        parse_sweep_text("optim: {batchsize: 3}\n")


def test_every_key_has_a_default() -> None:
    sweep = parse_sweep_text("", default_name="empty")
    assert sweep.name == "empty"
    assert sweep.trainable == "train" and sweep.dataset.name == "digits"


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sweep = parse_sweep_text("dataset: {name: cifar10, root: data}\n")
    assert sweep.dataset.root == str(tmp_path / "data")


def test_grid_crossed_with_num_samples() -> None:
    sweep = parse_sweep_text(
        GOOD
        + "num_samples: 2\nsearch:\n  optim.lr: {grid: [0.1, 0.01, 0.001]}\n"
        + "  lora.rank: {grid: [4, 8]}\n  optim.weight_decay: {loguniform: [1.0e-4, 1.0e-1]}\n"
    )
    trials = expand(sweep)
    assert len(trials) == 3 * 2 * 2
    assert {t["optim.lr"] for t in trials} == {0.1, 0.01, 0.001}
    assert all(t["optim.weight_decay"].startswith("loguniform") for t in trials)
    space = param_space(sweep)
    assert space["optim"]["lr"] == {"grid_search": [0.1, 0.01, 0.001]}


def test_search_over_a_whole_section() -> None:
    sweep = parse_sweep_text(
        "search:\n  model:\n    grid:\n      - {name: resnet18}\n      - {name: vit_tiny_patch16_224, img_size: 32}\n"
    )
    assert [t["model"]["name"] for t in expand(sweep)] == ["resnet18", "vit_tiny_patch16_224"]


def test_validate_prints_expanded_trials(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(GOOD + "search: {optim.lr: {grid: [0.1, 0.01]}}\n")
    assert main(["validate", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "2 trial(s)" in out and "0.01" in out


def test_shipped_sweeps_validate() -> None:
    # Validation includes each model at every profiled input size (no padded Swin windows).
    paths = sorted((Path(__file__).resolve().parents[2] / "sweeps").glob("*.yaml"))
    assert len(paths) >= 8, "the shipped sweeps were not found"
    for path in paths:
        # validate runs the run's offline pre-flight: --smoke swaps the hub weights and CIFAR
        # files this machine may lack, as the run would.
        assert main(["validate", str(path), "--smoke"]) == 0, path
