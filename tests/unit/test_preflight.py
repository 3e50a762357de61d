"""`validate` checks what the run checks: unreachable weights and a LoRA target that names no
layer exit 2 at validate, as they would at run time, naming the key and what there is."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import cli
from orchestrator.driver import offline

TARGETS = """
name: check_targets
trainable: lora
model: {name: vit_tiny_patch16_224, pretrained: false, img_size: 32, kwargs: {patch_size: 8, depth: 1}}
dataset: {name: digits}
lora: {rank: 4, target_modules: [qkv, nope]}
"""
WEIGHTS = """
name: check_weights
trainable: finetune
model: {name: resnet18, pretrained: true, img_size: 32}
dataset: {name: digits}
"""


def test_a_target_that_names_no_layer_is_named_with_the_layers_there_are(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sweep = tmp_path / "t.yaml"
    sweep.write_text(TARGETS)
    assert cli.main(["validate", str(sweep)]) == 2
    err = capsys.readouterr().err
    assert "'nope'" in err and "'qkv'" not in err.split("of [")[0]
    assert "qkv, nope" not in err.split("layers end in:")[-1]
    assert all(layer in err.split("layers end in:")[-1] for layer in ("qkv", "proj", "fc1"))


def test_validate_exits_2_on_weights_the_run_could_not_have(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(offline, "weights_cached", lambda name, kwargs: False)
    offline.reachable.cache_clear()
    sweep = tmp_path / "w.yaml"
    sweep.write_text(WEIGHTS)
    try:
        assert cli.main(["validate", str(sweep)]) == 2
        assert "model.pretrained" in capsys.readouterr().err
        assert cli.main(["validate", str(sweep), "--no-pretrained"]) == 0  # the way out it names
    finally:
        offline.reachable.cache_clear()
