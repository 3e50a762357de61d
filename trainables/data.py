"""Datasets and loaders.

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download),
  resized to the model's input once and kept in memory as tensors.
- `cifar10` / `cifar100`: torchvision's readers of the standard python-pickle files under `root`.
- `imagefolder` / `imagenet`: class folders under `root/train` and `root/val`.
- `synthetic`: random images of any size, for pure cost measurements (accuracy means nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from trainables.trial_config import DatasetConfig

# Normalization constants: ImageNet's, which timm/torchvision models expect.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]


class DatasetMissingError(FileNotFoundError):
    pass


def build_data(cfg: DatasetConfig, img_size: int, *, seed: int = 0) -> DataBundle:
    """The train and validation splits of `cfg`, as images of `img_size` x `img_size`."""
    builders = {
        "digits": _digits,
        "synthetic": _synthetic,
        "cifar10": _cifar,
        "cifar100": _cifar,
        "imagefolder": _image_folder,
        "imagenet": _image_folder,
    }
    bundle = builders[cfg.name](cfg, img_size, seed)
    if cfg.subset is not None:
        bundle.train = _head(bundle.train, cfg.subset, seed)
        bundle.val = _head(bundle.val, cfg.subset, seed + 1)
    return bundle


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, cfg: DatasetConfig, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=cfg.num_workers,
        pin_memory=cfg.pin_memory,
        generator=generator,
        persistent_workers=cfg.num_workers > 0,
    )


def _head(dataset: Dataset, n: int, seed: int) -> Dataset:
    """A fixed random subset of at most n samples (random, so every class shows up)."""
    size = len(dataset)  # type: ignore[arg-type]
    if n >= size:
        return dataset
    idx = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
    return Subset(dataset, idx.tolist())


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def _digits(cfg: DatasetConfig, img_size: int, seed: int) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 grey levels 0..16 -> [0, 1], 3 channels, resized once (not per batch).
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    images = _normalize(images.expand(-1, 3, -1, -1).contiguous())
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, val_idx = _split(len(labels), cfg.val_fraction, seed=1234)
    return DataBundle(
        train=TensorDataset(images[train_idx], labels[train_idx]),
        val=TensorDataset(images[val_idx], labels[val_idx]),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
    )


def _synthetic(cfg: DatasetConfig, img_size: int, seed: int) -> DataBundle:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(cfg.num_samples, 3, img_size, img_size, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (cfg.num_samples,), generator=gen)
    train_idx, val_idx = _split(cfg.num_samples, cfg.val_fraction, seed)
    return DataBundle(
        train=TensorDataset(images[train_idx], labels[train_idx]),
        val=TensorDataset(images[val_idx], labels[val_idx]),
        num_classes=cfg.num_classes,
        class_names=[str(i) for i in range(cfg.num_classes)],
    )


def _transform(img_size: int, *, train: bool):
    from torchvision import transforms as T

    steps = [T.Resize((img_size, img_size))]
    if train:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(MEAN, STD)]
    return T.Compose(steps)


CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


def _files_present(self: object) -> bool:
    """torchvision checks CIFAR files by MD5 (a full read of 170 MB each run); presence is enough
    here, and the download itself is still checked against its MD5."""
    folder = Path(self.root) / self.base_folder  # type: ignore[attr-defined]
    return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)  # type: ignore[attr-defined]


def _load_meta_unchecked(self: object) -> None:
    import pickle

    path = Path(self.root) / self.base_folder / self.meta["filename"]  # type: ignore[attr-defined]
    if not path.is_file():
        raise RuntimeError(f"CIFAR metadata file {path} is missing")
    with open(path, "rb") as f:
        names = pickle.load(f, encoding="latin1")[self.meta["key"]]  # type: ignore[attr-defined]
    self.classes = names  # type: ignore[attr-defined]
    self.class_to_idx = {c: i for i, c in enumerate(names)}  # type: ignore[attr-defined]


def _cifar_class(name: str) -> type:
    from torchvision import datasets

    base = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    overrides = {"_check_integrity": _files_present, "_load_meta": _load_meta_unchecked}
    return type(base.__name__, (base,), overrides)


def _cifar(cfg: DatasetConfig, img_size: int, seed: int) -> DataBundle:
    cls = _cifar_class(cfg.name)
    root = Path(cfg.root)
    folder = root / CIFAR_FOLDERS[cfg.name]

    def load(train: bool) -> Dataset:
        try:
            return cls(
                str(root),
                train=train,
                download=cfg.download,
                transform=_transform(img_size, train=train),
            )
        except (OSError, RuntimeError, ValueError) as err:
            raise DatasetMissingError(
                f"dataset.root: {cfg.name} files not found under {folder} and could not be "
                f"downloaded ({err.__class__.__name__}: {err}). Put the extracted python version "
                f"of {cfg.name} (folder {CIFAR_FOLDERS[cfg.name]}/ from the official tarball) "
                f"under {root}, or set dataset.root to where it is."
            ) from err

    train = load(True)
    val = load(False)
    return DataBundle(
        train=train, val=val, num_classes=len(train.classes), class_names=list(train.classes)
    )


def _image_folder(cfg: DatasetConfig, img_size: int, seed: int) -> DataBundle:
    from torchvision import datasets

    root = Path(cfg.root)
    splits = {}
    for split in ("train", "val"):
        path = root / split
        if not path.is_dir():
            raise DatasetMissingError(
                f"dataset.root: {cfg.name} expects class folders under {path} "
                f"({root}/train/<class>/*.jpg and {root}/val/<class>/*.jpg)"
            )
        splits[split] = datasets.ImageFolder(
            str(path), transform=_transform(img_size, train=split == "train")
        )
    if splits["train"].classes != splits["val"].classes:
        raise DatasetMissingError(
            f"dataset.root: train and val class folders differ under {root}: "
            f"{len(splits['train'].classes)} vs {len(splits['val'].classes)} classes"
        )
    return DataBundle(
        train=splits["train"],
        val=splits["val"],
        num_classes=len(splits["train"].classes),
        class_names=list(splits["train"].classes),
    )
