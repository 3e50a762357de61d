"""scripts/gpu_check.sh stays runnable: every seed-study file scripts/gpu_steps.py writes is a
valid one-stage sweep with the trial picked, at the study's own batch size and resolution on the
GPU, with synthetic data and random weights; the step limits fit the 8-minute budget; the wheels
install with dependency resolution."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.driver.schema import validate_sweep_dict
from orchestrator.driver.search_space import expand, trial_config
from orchestrator.driver.single_trial import pick_trial

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("gpu_steps", ROOT / "scripts" / "gpu_steps.py")
assert spec and spec.loader
gpu_steps = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gpu_steps)


def _trials(step: str, mode: str) -> list[dict[str, Any]]:
    doc, indices = gpu_steps.study_sweep(step, mode)
    sweep = validate_sweep_dict(doc, source=step)
    assert len(expand(sweep)) > max(indices)
    return [trial_config(sweep, pick_trial(sweep, i)) for i in indices]


@pytest.mark.parametrize("step", sorted(gpu_steps.STUDIES))
def test_each_study_file_is_a_valid_offline_sweep(step: str) -> None:
    for mode, device in (("gpu", "cuda"), ("dry", "cpu")):
        for cfg in _trials(step, mode):
            assert cfg["device"] == device
            assert cfg["dataset"]["name"] == "synthetic"
            assert cfg["model"].get("pretrained") is False
            assert cfg["optim"]["epochs"] == 1 and cfg["optim"]["max_train_batches"] >= 2
            assert cfg["checkpoint"]["enabled"] is False


def test_gpu_files_keep_the_studies_batch_and_resolution() -> None:
    lora = yaml.safe_load((ROOT / "sweeps" / "lora_ranks.yaml").read_text())
    (bench,) = _trials("lora_bench", "gpu")[:1]
    assert bench["trainable"] == "bench" and bench["model"]["img_size"] == 224
    assert bench["bench"]["batch_sizes"] == lora["stages"][0]["bench"]["batch_sizes"]
    assert [c["lora"]["rank"] for c in _trials("lora_bench", "gpu")] == [0, 8]
    perf = [_trials(s, "gpu")[0] for s in ("perf_fp32", "perf_bf16_loaders", "perf_on_device")]
    assert {c["model"]["name"] for c in perf} == {"resnet50"}
    assert {c["optim"]["batch_size"] for c in perf} == {64}
    assert perf[1]["dataset"]["num_workers"] == 4 and perf[2]["dataset"]["on_device"] is True
    attention = _trials("attention", "gpu")
    assert [c["model"].get("attention") for c in attention] == ["plain", "fused", None]
    (prune,) = _trials("prune", "gpu")
    assert prune["trainable"] == "prune_recover" and prune["model"]["name"] == "vit_b16"
    assert prune["prune"]["method"] == "structured" and prune["model"]["img_size"] == 224
    (hybrid,) = _trials("hybrid", "gpu")
    assert hybrid["model"]["name"] == "vit_b_r50"
    dry = _trials("attention", "dry")
    assert {c["model"]["img_size"] for c in dry} == {32} and dry[0]["optim"]["batch_size"] == 4


def test_step_limits_fit_the_budget_and_installs_resolve_dependencies() -> None:
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    block = re.search(r"declare -A GPU_LIMIT=\((.*?)\)\n", script, re.S)
    assert block
    limits = {k: int(v) for k, v in re.findall(r"\[(\w+)\]=(\d+)", block.group(1))}
    steps = re.search(r"STEPS=\((.*?)\)\n", script, re.S)
    assert steps and set(steps.group(1).split()) == set(limits)
    assert sum(limits.values()) < 480
    code = [line for line in script.splitlines() if not line.lstrip().startswith("#")]
    assert not any("--no-deps" in line or "--target" in line for line in code)
    assert any("--no-index --find-links .whl" in line for line in code)


def test_the_bare_loop_steps_with_the_trial_optimizer() -> None:
    """The side-by-side's bare loop must not be slower by a choice of optimizer kernel: its AdamW
    has the trial's step (fused where the device has one) and the trial's weight decay per
    parameter (none on norms and biases)."""
    import timm
    import torch

    from trainables.config import TrialConfig
    from trainables.loop.optim import build_optimizer, plain_adamw, uses_fused

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    cpu = torch.device("cpu")
    bare = plain_adamw(model, cpu)
    trial = build_optimizer(model, TrialConfig.model_validate({"model": {"name": "resnet18"}}))
    assert type(bare) is type(trial) and uses_fused(bare) == uses_fused(trial)

    def decay(opt: torch.optim.Optimizer) -> dict[int, float]:
        return {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}

    assert decay(bare) == decay(trial)
    assert {g["lr"] for g in bare.param_groups} == {g["lr"] for g in trial.param_groups}
