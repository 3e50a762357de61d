"""Unreachable weights and data are found before Ray starts: an error, or a recorded swap when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main
from orchestrator.driver import offline
from orchestrator.driver.schema import SweepError, parse_sweep_text

LORA = "trainable: lora\nmodel: {name: vit_tiny_patch16_224, pretrained: true, img_size: 32}\n"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offline, "reachable", lambda host, timeout=3.0: False)
    monkeypatch.setattr(offline, "weights_cached", lambda name, kwargs: False)


def test_unreachable_hub_weights_are_an_error_without_a_flag() -> None:
    sweep = parse_sweep_text(LORA)
    with pytest.raises(SweepError, match=r"model.pretrained.*--no-pretrained"):
        offline.check_offline(sweep, swap_weights=False, swap_data=False)


def test_no_pretrained_swaps_and_records() -> None:
    out = offline.check_offline(parse_sweep_text(LORA), swap_weights=True, swap_data=False)
    assert out.model.pretrained is False
    assert out.substitutions and "model.pretrained" in out.substitutions[0]


def test_smoke_swaps_missing_cifar(tmp_path: Path) -> None:
    for name, swapped in (("cifar10", "digits"), ("cifar100", "synthetic")):
        sweep = parse_sweep_text(f"dataset: {{name: {name}, root: {tmp_path}}}\n")
        with pytest.raises(SweepError, match=r"dataset\.root"):
            offline.check_offline(sweep, swap_weights=False, swap_data=False)
        out = offline.check_offline(sweep, swap_weights=True, swap_data=True)
        assert out.dataset.name == swapped
        assert any(name in s for s in out.substitutions)
    assert out.dataset.num_classes == 100


def test_present_cifar_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / "cifar-10-batches-py").mkdir()
    sweep = parse_sweep_text(f"dataset: {{name: cifar10, root: {tmp_path}}}\n")
    out = offline.check_offline(sweep, swap_weights=True, swap_data=True)
    assert out.dataset.name == "cifar10" and out.substitutions == []


def test_cli_exits_2_before_ray_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "s.yaml"
    sweep.write_text(LORA)
    assert main([str(sweep), "--output", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    assert "--no-pretrained" in capsys.readouterr().err
