"""Datasets: digits built in, CIFAR from files on disk (written here), clear errors when missing,
and the input pipeline taken from the model (timm's data config), not from a constant."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainables.config import DatasetConfig
from trainables.data.loaders import DatasetMissingError, Pipeline, build_data, make_loader


def pipe(img_size: int) -> Pipeline:
    return Pipeline(img_size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear", 0.9)


def test_digits_resized_normalized_and_split() -> None:
    data = build_data(DatasetConfig(name="digits"), pipe(32))
    image, label = data.train[0]
    assert tuple(image.shape) == (3, 32, 32)
    assert data.num_classes == 10 and 0 <= int(label) < 10
    assert len(data.train) + len(data.val) == 1797
    assert abs(len(data.val) - 0.2 * 1797) <= 1


def test_digits_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits

    from trainables.data.loaders import digits_arrays

    images, target = digits_arrays()
    ref = load_digits()
    assert np.array_equal(images, ref.images) and np.array_equal(target, ref.target)


def test_subset_caps_each_split() -> None:
    data = build_data(DatasetConfig(name="digits", subset=50), pipe(16))
    assert len(data.train) == 50 and len(data.val) == 50


def test_synthetic_any_size() -> None:
    data = build_data(DatasetConfig(name="synthetic", num_classes=7, num_samples=40), pipe(48))
    image, _ = data.val[0]
    assert tuple(image.shape) == (3, 48, 48) and data.num_classes == 7


def write_cifar10(root: Path, n_per_batch: int = 20) -> None:
    """Files in the layout and pickle format of the official python CIFAR-10 tarball."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {
            "data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
            "labels": [int(x) for x in rng.integers(0, 10, n_per_batch)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    meta = {"label_names": [f"class{i}" for i in range(10)]}
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(meta, f)


def test_cifar10_reads_standard_files(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    cfg = DatasetConfig(name="cifar10", root=str(tmp_path), download=False)
    data = build_data(cfg, pipe(40))
    assert len(data.train) == 100 and len(data.val) == 20
    assert data.num_classes == 10 and data.class_names[3] == "class3"
    images, labels = next(iter(make_loader(data.train, 8, shuffle=True, cfg=cfg)))
    assert tuple(images.shape) == (8, 3, 40, 40) and labels.dtype.is_floating_point is False


def test_cifar_missing_offline_says_where_files_go(tmp_path: Path) -> None:
    cfg = DatasetConfig(name="cifar100", root=str(tmp_path), download=False)
    with pytest.raises(DatasetMissingError, match="cifar-100-python"):
        build_data(cfg, pipe(32))


def test_imagefolder_reads_class_folders(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (20, 20), (i * 40, 0, 0)).save(d / f"{i}.png")
    data = build_data(DatasetConfig(name="imagefolder", root=str(tmp_path)), pipe(24))
    assert data.class_names == ["cat", "dog"] and len(data.train) == 6
    assert tuple(data.val[0][0].shape) == (3, 24, 24)


def test_imagefolder_missing_split_is_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetMissingError, match="class folders under"):
        build_data(DatasetConfig(name="imagenet", root=str(tmp_path)), pipe(24))


def test_pipeline_is_the_models_own(tmp_path: Path) -> None:
    """ViT-B/16 augreg expects mean = std = 0.5 and bicubic, not ImageNet's constants."""
    import timm
    from torchvision import transforms as T

    name = "vit_base_patch16_224.augreg2_in21k_ft_in1k"
    model = timm.create_model(name, pretrained=False, num_classes=10, img_size=32)
    cfg = model.pretrained_cfg
    assert tuple(cfg["mean"]) == (0.5, 0.5, 0.5)  # the premise: not ImageNet's
    pipeline = Pipeline.from_model(model, 32)
    assert pipeline.mean == tuple(cfg["mean"]) and pipeline.std == tuple(cfg["std"])
    assert pipeline.interpolation == cfg["interpolation"] == "bicubic"

    write_cifar10(tmp_path)
    data = build_data(DatasetConfig(name="cifar10", root=str(tmp_path), download=False), pipeline)
    for split in ("train", "val"):
        norm = next(t for t in data.transforms[split].transforms if isinstance(t, T.Normalize))
        assert tuple(norm.mean) == tuple(cfg["mean"]) and tuple(norm.std) == tuple(cfg["std"])
    resize = next(t for t in data.transforms["val"].transforms if isinstance(t, T.Resize))
    assert resize.interpolation == T.InterpolationMode.BICUBIC


def test_digits_normalized_with_the_models_statistics() -> None:
    """In-memory images are normalized once, with the pipeline's mean and std."""
    a = build_data(DatasetConfig(name="digits", subset=64), pipe(16))
    imagenet = Pipeline(16, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "bilinear", 0.9)
    b = build_data(DatasetConfig(name="digits", subset=64), imagenet)
    x, y = a.val[0][0], b.val[0][0]
    # The same pixel p in [0, 1]: (p - 0.5) / 0.5 vs (p - 0.485) / 0.229 on channel 0.
    p = x[0] * 0.5 + 0.5
    assert torch.allclose(y[0], (p - 0.485) / 0.229, atol=1e-5)
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6
