"""Hugging Face transformers models (`hf:<path>`, `hf/<repo>`) and `datasets` sets as lvmbench
models and datasets: made in the test, saved, loaded by name, trained, LoRA-tuned, counted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets  # the `hf` extra, which `dev` installs
import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from profilers.flops import count_flops
from trainables import lora, train
from trainables.adapters.lora import count_params
from trainables.config import DatasetConfig, ModelConfig
from trainables.data.loaders import Pipeline, open_data
from trainables.loop.reporting import ListReporter
from trainables.models.create import create_model
from trainables.models.hf import HFMissingError

CLASSES = 3
MEAN = (0.1, 0.2, 0.3)


def tiny_vit(folder: Path, **config: Any) -> Path:
    """A 2-block ViT (hidden 32, 8 px patches on 32 px) with its image processor, saved."""
    cfg = transformers.ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=5,
        **config,
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(cfg).save_pretrained(folder)
    transformers.ViTImageProcessor(
        size={"height": 32, "width": 32}, image_mean=list(MEAN), image_std=[0.5, 0.5, 0.5]
    ).save_pretrained(folder)
    return folder


def tiny_images(n: int, seed: int) -> tuple[list[Image.Image], list[int]]:
    """n 12x12 RGB images whose mean colour encodes one of CLASSES labels."""
    rng = np.random.default_rng(seed)
    labels = [i % CLASSES for i in range(n)]
    images = [
        Image.fromarray((rng.random((12, 12, 3)) * 60 + 80 * y).astype(np.uint8)) for y in labels
    ]
    return images, labels


def tiny_dataset() -> Any:
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])}
    )
    splits = {}
    for split, n, seed in (("train", 24, 0), ("test", 9, 1)):
        images, labels = tiny_images(n, seed)
        splits[split] = datasets.Dataset.from_dict(
            {"img": images, "label": labels}, features=features
        )
    return datasets.DatasetDict(splits)


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_vit(tmp_path_factory.mktemp("hf_vit"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hf_data") / "saved"
    tiny_dataset().save_to_disk(str(folder))
    return folder


def test_loaded_by_path_counts_as_transformers_and_fvcore_say(vit_dir: Path) -> None:
    model = create_model(
        ModelConfig(name=f"hf:{vit_dir}", img_size=32, pretrained=True), CLASSES
    ).eval()
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, CLASSES)  # logits, head resized from 5 to 3 classes
    direct = transformers.ViTForImageClassification.from_pretrained(
        vit_dir, num_labels=CLASSES, ignore_mismatched_sizes=True
    )
    assert count_params(model)[0] == direct.num_parameters()
    # The trained weights were loaded, not re-drawn: the backbone equals the saved one.
    saved = transformers.ViTForImageClassification.from_pretrained(vit_dir)
    ours = dict(model.hf.named_parameters())
    for name, p in saved.named_parameters():
        if not name.startswith("classifier"):
            assert torch.equal(ours[name], p), name

    # FLOPs: our counter runs transformers' SDPA attention through the SDPA handler; fvcore on
    # the eager (matmul-softmax) model, called directly, must give the same MACs.
    from fvcore.nn import FlopCountAnalysis

    eager = transformers.ViTForImageClassification.from_pretrained(
        vit_dir, num_labels=CLASSES, ignore_mismatched_sizes=True, attn_implementation="eager"
    ).eval()

    class Logits(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.m(pixel_values=x).logits

    row = count_flops(model, 32)
    assert row["status"] == "ok", row["error"]
    direct_macs = FlopCountAnalysis(Logits(eager), torch.randn(1, 3, 32, 32))
    direct_macs.unsupported_ops_warnings(False)
    assert row["fwd_gmacs"] * 1e9 == pytest.approx(direct_macs.total(), rel=1e-9)
    assert row["fwd_gflops"] > 0


def test_pipeline_and_lora_targets_come_from_the_checkpoint(vit_dir: Path) -> None:
    model = create_model(ModelConfig(name=f"hf:{vit_dir}", img_size=32, pretrained=True), CLASSES)
    pipe = Pipeline.from_model(model, 32)
    assert pipe.mean == pytest.approx(MEAN)  # the image processor's, not timm's defaults
    assert pipe.std == pytest.approx((0.5, 0.5, 0.5))
    assert model.lora_targets in (["query", "value"], ["q_proj", "v_proj"])
    # Another input size resamples the position embeddings per forward.
    assert model(torch.randn(1, 3, 48, 48)).shape == (1, CLASSES)


def test_hf_dataset_from_disk_and_parquet(data_dir: Path, tmp_path: Path) -> None:
    raw = open_data(DatasetConfig(name=f"hf:{data_dir}"), 32)
    assert raw.num_classes == CLASSES and raw.class_names == ["a", "b", "c"]
    assert len(raw.train) == 24 and len(raw.val) == 9  # `test` serves as the val split
    pq = tmp_path / "pq"
    pq.mkdir()
    for split, part in tiny_dataset().items():
        part.to_parquet(str(pq / f"{split}.parquet"))
    raw = open_data(DatasetConfig(name=f"hf:{pq}", val_split="test"), 32)
    assert (len(raw.train), len(raw.val), raw.num_classes) == (24, 9, CLASSES)
    with pytest.raises(ValueError, match=r"dataset\.val_split 'nope'"):
        open_data(DatasetConfig(name=f"hf:{pq}", val_split="nope"), 32)


def _trial(vit_dir: Path, data_dir: Path, trainable: str, **over: Any) -> dict[str, Any]:
    return {
        "trainable": trainable,
        "model": {"name": f"hf:{vit_dir}", "img_size": 32, "pretrained": True},
        "dataset": {"name": f"hf:{data_dir}"},
        "optim": {"batch_size": 8, "epochs": 1, "max_train_batches": 2, "max_val_batches": 1},
        "precision": "fp32",
        "device": "cpu",
        "profilers": {"latency": None, "memory": None},
        **over,
    }


def test_trains_one_epoch_and_lora_tunes(vit_dir: Path, data_dir: Path) -> None:
    reporter = ListReporter()
    train.run(_trial(vit_dir, data_dir, "train"), reporter)
    row = reporter.trial_row()
    assert row["data/mean"] == ",".join(f"{x:g}" for x in MEAN)
    assert 0 <= row["val/acc"] <= 1 and row["params/total"] > 0 and row["flops/fwd_gmacs"] > 0

    reporter = ListReporter()
    lora.run(_trial(vit_dir, data_dir, "lora", lora={"rank": 2, "dropout": 0.0}), reporter)
    row = reporter.trial_row()
    # Default targets: query and value of both blocks (hidden 32): 2 * 2 * 2 * (32 + 32).
    assert row["lora/adapted_modules"] == 4
    assert row["lora/adapter_params"] == 4 * 2 * (32 + 32)
    assert row["params/trainable"] == row["lora/adapter_params"] + 32 * CLASSES + CLASSES
    assert row["lora/merge_max_abs_diff"] < 1e-4


def test_missing_hub_model_names_repo_and_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HFMissingError) as err:
        create_model(ModelConfig(name="hf/lvmbench-test/no-such-model"), CLASSES)
    text = str(err.value)
    assert "lvmbench-test/no-such-model" in text
    assert huggingface_hub.constants.HF_HUB_CACHE in text
