"""Bad sweep files never start Ray: exit 2, a message naming the key or the line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.cli import main

CASES = {
    "empty": (b"", "the file is empty"),
    "comments_only": (b"# nothing here\n", "the file is empty"),
    "latin1": (b"name: x\ntrainable: train\n# caf\xe9\n", "line 3: not UTF-8"),
    "duplicate": (
        b"name: d\noptim:\n  lr: 0.1\n  batch_size: 8\n  lr: 0.2\n",
        "duplicate key 'lr' (first at line 3, again at line 5)",
    ),
    "escaping_name": (b"name: ../../escaped\n", "name: a sweep name is letters, digits"),
    "leading_dot": (b"name: .hidden\n", "name: a sweep name"),
    "missing_pretrained": (
        b"name: p\nmodel: {name: resnet10t, pretrained: nowhere/w.safetensors}\n",
        "model.pretrained: no checkpoint file at",
    ),
    "missing_checkpoint": (
        b"name: f\ntrainable: finetune\nfinetune: {checkpoint: nope.pt}\n",
        "finetune.checkpoint: no checkpoint file at",
    ),
    "missing_imagefolder": (
        b"name: i\ndataset: {name: imagefolder, root: nothing}\n",
        "dataset.root: imagefolder reads class folders",
    ),
    "missing_searched_root": (
        b"name: s\ndataset: {name: imagenet}\nsearch: {dataset.root: {grid: [a, b]}}\n",
        "dataset.root (search.dataset.root.grid[1])",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_sweep_exits_2_naming_the_problem_and_writes_nothing(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    content, message = CASES[case]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (work / "bad.yaml").write_bytes(content)
    assert main(["bad.yaml", "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err
    # Nothing written: no output folder, no MLflow store, no Ray session started by us.
    assert sorted(p.name for p in work.iterdir()) == ["bad.yaml"]
    import ray

    assert not ray.is_initialized()


def test_a_name_with_dots_inside_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ok.yaml").write_text("name: vit.b-16_run2\n")
    assert main(["validate", "ok.yaml"]) == 0


def test_an_existing_image_folder_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for split in ("train", "val"):
        (tmp_path / "imgs" / split / "cat").mkdir(parents=True)
    (tmp_path / "ok.yaml").write_text("name: i\ndataset: {name: imagefolder, root: imgs}\n")
    assert main(["validate", "ok.yaml"]) == 0


TOO_BIG = {
    "gpus": (
        "name: g\ntrainable: train\nmodel: {name: resnet18, img_size: 32}\n"
        "dataset: {name: digits}\nresources: {gpu: 8}\n",
        "resources.gpu: each trial asks for 8 GPU but this machine has",
    ),
    # The first stage fits; the second does not: nothing runs, not even the first.
    "later_stage": (
        "name: s\nmodel: {name: resnet18, img_size: 32}\ndataset: {name: digits}\n"
        "optim: {epochs: 1, max_train_batches: 1, max_val_batches: 1}\nresources: {cpu: 1}\n"
        "stages:\n  - {name: first, trainable: train}\n"
        "  - {name: second, trainable: train, resources: {gpu: 8}}\n",
        "resources.gpu (stage 'second'): each trial asks for 8 GPU",
    ),
}


@pytest.mark.parametrize("case", sorted(TOO_BIG))
def test_more_than_this_machine_has_exits_2_before_ray_and_writes_nothing(
    case: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from orchestrator.driver.preflight import local_gpus

    if local_gpus() >= 8:
        pytest.skip("this machine has 8 GPUs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    content, message = TOO_BIG[case]
    (tmp_path / "big.yaml").write_text(content)
    assert main(["big.yaml", "--output", "out"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]  # no out/, no out/ray.log
    import ray

    assert not ray.is_initialized()


def test_gpus_visible_to_this_process_are_counted_as_ray_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orchestrator.driver.preflight import local_gpus

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert local_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    physical = local_gpus()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert local_gpus() == min(physical, 1)
