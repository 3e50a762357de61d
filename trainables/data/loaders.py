"""Datasets, the input pipeline each model asks for, and loaders.

A dataset is opened once, model-free (`open_data`: the registered opener, then `subset`), and
gets its pipeline once the model is known (`attach_pipeline`): mean, std, interpolation and crop
come from `timm.data.resolve_model_data_config(model)`, as timm's own `validate.py` and
`benchmark.py` take them (ViT-B/16 augreg: mean = std = 0.5, bicubic; ResNet: ImageNet's).

- `digits`: scikit-learn's bundled 8x8 handwritten digits (1,797 real images, no download), kept
  in memory as tensors, resized to the model's input and normalized once (not per batch).
- `cifar10` / `cifar100`: torchvision's readers of the standard python-pickle files under `root`.
- `imagefolder` / `imagenet`: class folders under `root/train` and `root/val`.
- `synthetic`: random images of any size, for pure cost measurements (accuracy means nothing).

Evaluation crops the centre by the model's `crop_pct` for photo folders (`imagefolder`,
`imagenet`), as timm validates; CIFAR and digits show whole small objects and are only resized.
Training flips horizontally where the dataset allows it (photos; not digits), and crops at random
after reflect padding when `dataset.crop_pad` > 0.

`dataset.on_device: true` (digits, CIFAR, synthetic) skips the DataLoader: `DeviceLoader` holds a
split as one uint8 tensor on the trial's device, shuffles it by index each epoch, and crops, flips,
resizes and normalizes whole batches there (airbench-style), with the same pipeline contract.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from trainables.config import DatasetConfig
from trainables.registry import CIFAR_FOLDERS, dataset_opener


class DatasetMissingError(FileNotFoundError):
    pass


@dataclass(frozen=True)
class Pipeline:
    """The input a model expects: side length, normalization, resampling and evaluation crop."""

    img_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float

    @classmethod
    def from_model(cls, model: nn.Module, img_size: int) -> Pipeline:
        """The model's own data config (timm's pretrained_cfg; timm's defaults otherwise)."""
        from timm.data import resolve_model_data_config

        from trainables.models.heads import plain_model

        config = resolve_model_data_config(plain_model(model))
        return cls(
            img_size=img_size,
            mean=tuple(float(x) for x in config["mean"]),
            std=tuple(float(x) for x in config["std"]),
            interpolation=str(config.get("interpolation") or "bilinear"),
            crop_pct=float(config.get("crop_pct") or 1.0),
        )

    def facts(self) -> dict[str, Any]:
        return {
            "data/mean": ",".join(f"{x:g}" for x in self.mean),
            "data/std": ",".join(f"{x:g}" for x in self.std),
            "data/interpolation": self.interpolation,
            "data/crop_pct": self.crop_pct,
        }


@dataclass
class TensorSplit:
    """An in-memory split: float images in [0, 1] (N x 3 x H x W) at their stored size."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RawData:
    """A dataset before any model-specific step: what `open_data` returns."""

    train: TensorSplit | Dataset
    val: TensorSplit | Dataset
    num_classes: int
    class_names: list[str]
    crop: bool = False  # evaluation takes the model's centre crop (photo folders)
    flip: bool = True  # training flips horizontally (not for digits: a flipped 2 is no 2)
    pad: int = 0  # training random crop after reflect padding (dataset.crop_pad)


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    num_classes: int
    class_names: list[str]
    pipeline: Pipeline
    transforms: dict[str, Any] = field(default_factory=dict)  # split -> torchvision transform


def open_data(cfg: DatasetConfig, img_size: int, *, seed: int = 0) -> RawData:
    """The registered opener of `cfg.name`, with `cfg.subset` applied to each split."""
    raw: RawData = dataset_opener(cfg.name)(cfg, img_size, seed)
    raw.pad = cfg.crop_pad
    if cfg.subset is not None:
        raw.train = _subset(raw.train, cfg.subset, seed)
        raw.val = _subset(raw.val, cfg.subset, seed + 1)
    return raw


def attach_pipeline(raw: RawData, pipeline: Pipeline) -> DataBundle:
    """Train/val datasets that yield (normalized image tensor, label) as `pipeline` says."""
    transforms: dict[str, Any] = {}
    splits: dict[str, Dataset] = {}
    for split in ("train", "val"):
        data = getattr(raw, split)
        if isinstance(data, TensorSplit):
            splits[split] = TensorDataset(_resize_normalize(data.images, pipeline), data.labels)
        else:
            transform = _transform(
                pipeline, train=split == "train", crop=raw.crop, flip=raw.flip, pad=raw.pad
            )
            _base(data).transform = transform  # type: ignore[attr-defined]
            transforms[split] = transform
            splits[split] = data
    return DataBundle(
        train=splits["train"],
        val=splits["val"],
        num_classes=raw.num_classes,
        class_names=raw.class_names,
        pipeline=pipeline,
        transforms=transforms,
    )


def build_data(cfg: DatasetConfig, pipeline: Pipeline, *, seed: int = 0) -> DataBundle:
    """`open_data` then `attach_pipeline`: the splits of `cfg` as `pipeline` wants them."""
    return attach_pipeline(open_data(cfg, pipeline.img_size, seed=seed), pipeline)


def make_loader(
    dataset: Dataset, batch_size: int, *, shuffle: bool, cfg: DatasetConfig, seed: int = 0
) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        pin_memory=cfg.pin_memory,
        generator=generator,
        persistent_workers=cfg.persistent_workers and workers > 0,
        prefetch_factor=cfg.prefetch_factor if workers > 0 else None,
    )


def _subset(data: TensorSplit | Dataset, n: int, seed: int) -> TensorSplit | Dataset:
    """A fixed random subset of at most n samples (random, so every class shows up)."""
    size = len(data)  # type: ignore[arg-type]
    if n >= size:
        return data
    idx = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n]
    if isinstance(data, TensorSplit):
        return TensorSplit(data.images[idx], data.labels[idx])
    return Subset(data, idx.tolist())


def _base(data: Dataset) -> Dataset:
    while isinstance(data, Subset):
        data = data.dataset
    return data


def _resize_normalize(images: torch.Tensor, p: Pipeline) -> torch.Tensor:
    size = (p.img_size, p.img_size)
    if tuple(images.shape[-2:]) != size:
        mode = (
            p.interpolation if p.interpolation in ("bilinear", "bicubic", "nearest") else "bilinear"
        )
        kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
        # Bicubic overshoots at edges: clamp back to the [0, 1] the normalization expects.
        images = F.interpolate(images, size=size, mode=mode, **kwargs).clamp_(0.0, 1.0)
    mean = torch.tensor(p.mean).view(1, -1, 1, 1)
    std = torch.tensor(p.std).view(1, -1, 1, 1)
    return ((images - mean) / std).contiguous()


def _transform(p: Pipeline, *, train: bool, crop: bool, flip: bool = True, pad: int = 0) -> Any:
    from timm.data import create_transform
    from timm.data.transforms import str_to_interp_mode
    from torchvision import transforms as T

    if not train:
        return create_transform(
            input_size=(3, p.img_size, p.img_size),
            is_training=False,
            interpolation=p.interpolation,
            mean=p.mean,
            std=p.std,
            crop_pct=p.crop_pct if crop else 1.0,
        )
    steps: list[Any] = []
    if pad:
        # At the stored size, as DeviceLoader crops: the pad is in the dataset's pixels.
        steps.append(_RandomPadCrop(pad))
    steps.append(
        T.Resize((p.img_size, p.img_size), interpolation=str_to_interp_mode(p.interpolation))
    )
    if flip:
        steps.append(T.RandomHorizontalFlip())
    return T.Compose([*steps, T.ToTensor(), T.Normalize(p.mean, p.std)])


class _RandomPadCrop:
    """Reflect-pad a PIL image by `pad` pixels and crop a random window of its own size."""

    def __init__(self, pad: int) -> None:
        self.pad = pad

    def __call__(self, img: Any) -> Any:
        from torchvision import transforms as T

        return T.RandomCrop((img.height, img.width), padding=self.pad, padding_mode="reflect")(img)


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(n * val_fraction))
    return perm[n_val:], perm[:n_val]


def digits_arrays() -> tuple[Any, Any]:
    """scikit-learn's digits: 8x8 images (grey levels 0..16) and their labels.

    Read from the csv scikit-learn ships, as `load_digits` reads it: importing `sklearn.datasets`
    (scipy and the rest) costs a trial's start about a second for a 1797-row file. Where the file
    is not at its place, `load_digits` itself.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("sklearn")
    origin = Path(spec.origin).parent if spec and spec.origin else None
    csv = origin / "datasets" / "data" / "digits.csv.gz" if origin else None
    if csv is None or not csv.is_file():
        from sklearn.datasets import load_digits

        digits = load_digits()
        return digits.images, digits.target
    data = np.loadtxt(csv, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def open_digits(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
    images_0_16, target = digits_arrays()
    # 8x8 grey levels 0..16 -> [0, 1], 3 channels; resized once the model's pipeline is known.
    images = torch.tensor(images_0_16, dtype=torch.float32).unsqueeze(1) / 16.0
    images = images.expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(target, dtype=torch.long)
    # A fixed split, whatever the trial's seed: every trial of a sweep validates on the same images.
    train_idx, val_idx = _split(len(labels), cfg.val_fraction, seed=1234)
    return RawData(
        train=TensorSplit(images[train_idx], labels[train_idx]),
        val=TensorSplit(images[val_idx], labels[val_idx]),
        num_classes=10,
        class_names=[str(i) for i in range(10)],
        flip=False,
    )


def open_synthetic(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
    gen = torch.Generator().manual_seed(seed)
    images = torch.rand(cfg.num_samples, 3, img_size, img_size, generator=gen)
    labels = torch.randint(0, cfg.num_classes, (cfg.num_samples,), generator=gen)
    train_idx, val_idx = _split(cfg.num_samples, cfg.val_fraction, seed)
    return RawData(
        train=TensorSplit(images[train_idx], labels[train_idx]),
        val=TensorSplit(images[val_idx], labels[val_idx]),
        num_classes=cfg.num_classes,
        class_names=[str(i) for i in range(cfg.num_classes)],
        flip=False,
    )


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


def open_cifar(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
    cls = _cifar_class(cfg.name)
    root = Path(cfg.root)
    folder = root / CIFAR_FOLDERS[cfg.name]

    def load(train: bool) -> Dataset:
        try:
            return cls(str(root), train=train, download=cfg.download)
        except (OSError, RuntimeError, ValueError) as err:
            raise DatasetMissingError(
                f"dataset.root: {cfg.name} files not found under {folder} and could not be "
                f"downloaded ({err.__class__.__name__}: {err}). Put the extracted python version "
                f"of {cfg.name} (folder {CIFAR_FOLDERS[cfg.name]}/ from the official tarball) "
                f"under {root}, or set dataset.root to where it is."
            ) from err

    train = load(True)
    val = load(False)
    return RawData(
        train=train, val=val, num_classes=len(train.classes), class_names=list(train.classes)
    )


def open_image_folder(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
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
        splits[split] = datasets.ImageFolder(str(path))
    if splits["train"].classes != splits["val"].classes:
        raise DatasetMissingError(
            f"dataset.root: train and val class folders differ under {root}: "
            f"{len(splits['train'].classes)} vs {len(splits['val'].classes)} classes"
        )
    return RawData(
        train=splits["train"],
        val=splits["val"],
        num_classes=len(splits["train"].classes),
        class_names=list(splits["train"].classes),
        crop=True,
    )


def uint8_split(data: TensorSplit | Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """A split as (uint8 N x 3 x H x W images, long labels) on the CPU, for `DeviceLoader`.

    TensorSplit images in [0, 1] are quantized to 0..255; CIFAR is read from its arrays
    (`dataset.data`, uint8 N x H x W x 3, and `targets`) through any `Subset` around it.
    """
    if isinstance(data, TensorSplit):
        images = (data.images * 255.0).round_().clamp_(0, 255).to(torch.uint8)
        return images.contiguous(), data.labels.clone()
    indices: torch.Tensor | None = None
    base = data
    while isinstance(base, Subset):
        idx = torch.as_tensor(base.indices, dtype=torch.long)
        indices = idx if indices is None else idx[indices]
        base = base.dataset
    arrays = getattr(base, "data", None)
    targets = getattr(base, "targets", None)
    if arrays is None or targets is None:
        raise ValueError(
            f"dataset.on_device: {type(base).__name__} keeps no image array in memory; "
            "on_device takes digits, cifar10, cifar100 and synthetic"
        )
    images = torch.as_tensor(arrays).permute(0, 3, 1, 2)
    labels = torch.as_tensor(targets, dtype=torch.long)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return images.contiguous(), labels


class DeviceLoader:
    """Batches of one split made on the device: no DataLoader, no worker, no host-to-device copy.

    The uint8 images sit on `device` as one tensor. Each pass (`iter`) of a training loader draws a
    new order (a permutation of indices); per batch, on the device: random crop after reflect
    padding (`pad`, at the stored size), horizontal flip (`flip`), resize to the pipeline's size
    with its interpolation, and its normalization. An evaluation loader (`train=False`) keeps the
    order and only resizes and normalizes. Yields (float images, labels) like a DataLoader.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        pipeline: Pipeline,
        *,
        batch_size: int,
        device: torch.device,
        train: bool,
        flip: bool = False,
        pad: int = 0,
        seed: int = 0,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"DeviceLoader wants uint8 N x C x H x W images, got {images.dtype}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.pipeline = pipeline
        self.batch_size = batch_size
        self.train = train
        self.flip = flip and train
        self.pad = pad if train else 0
        self.generator = torch.Generator().manual_seed(seed)
        self.mean = torch.tensor(pipeline.mean, device=self.device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(pipeline.std, device=self.device).view(1, -1, 1, 1) * 255.0

    def __len__(self) -> int:
        return -(-len(self.labels) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.train:
            # Drawn on the CPU generator (reproducible whatever the device), moved once per epoch.
            order = torch.randperm(n, generator=self.generator).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.batch(self.images[idx]), self.labels[idx]

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> the model's normalized float input, augmented when training."""
        x = images.float()
        if self.pad:
            x = _random_pad_crop(x, self.pad, self.generator)
        if self.flip:
            flip = torch.rand(x.shape[0], generator=self.generator).to(self.device) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)
        size = (self.pipeline.img_size, self.pipeline.img_size)
        if tuple(x.shape[-2:]) != size:
            mode = self.pipeline.interpolation
            mode = mode if mode in ("bilinear", "bicubic", "nearest") else "bilinear"
            kwargs = {} if mode == "nearest" else {"align_corners": False, "antialias": True}
            x = F.interpolate(x, size=size, mode=mode, **kwargs).clamp_(0.0, 255.0)
        return ((x - self.mean) / self.std).contiguous()


def _random_pad_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Per image: reflect-pad by `pad`, take a window of the original size at a random offset."""
    n, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


def device_loaders(
    raw: RawData,
    pipeline: Pipeline,
    cfg: DatasetConfig,
    *,
    batch_size: int,
    device: torch.device,
    seed: int = 0,
) -> tuple[DeviceLoader, DeviceLoader]:
    """`dataset.on_device`: the train and val splits of `raw` as DeviceLoaders on `device`."""
    train_images, train_labels = uint8_split(raw.train)
    val_images, val_labels = uint8_split(raw.val)
    train = DeviceLoader(
        train_images,
        train_labels,
        pipeline,
        batch_size=batch_size,
        device=device,
        train=True,
        flip=raw.flip,
        pad=raw.pad,
        seed=seed,
    )
    val = DeviceLoader(
        val_images, val_labels, pipeline, batch_size=batch_size, device=device, train=False
    )
    return train, val
