"""`dataset.on_device`: the same samples as the DataLoader, batched, augmented and normalized on the
device from one uint8 tensor; datasets that do not fit in memory are refused."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from trainables.config import DatasetConfig, TrialConfig
from trainables.data.loaders import DeviceLoader, Pipeline, uint8_split
from trainables.loop.scope import fresh_start
from trainables.loop.setup import TrialContext, TrialSetup
from trainables.models.create import create_model


@pytest.fixture(autouse=True)
def _fresh_process_state() -> Iterator[None]:
    fresh_start()
    yield
    fresh_start()


def context(on_device: bool, **dataset: Any) -> TrialContext:
    cfg = TrialConfig.model_validate(
        {
            "model": {"name": "resnet10t", "img_size": 16},
            "dataset": {"name": "digits", "subset": 100, "on_device": on_device, **dataset},
            "optim": {"batch_size": 16},
            "precision": "fp32",
        }
    )
    setup = TrialSetup.begin(cfg)
    return setup.with_model(create_model(cfg.model, setup.num_classes))


def labels_per_epoch(loader: Any, epochs: int = 2) -> list[list[int]]:
    return [[int(y) for _, ys in loader for y in ys] for _ in range(epochs)]


def test_on_device_gives_the_loaders_label_multiset_each_epoch() -> None:
    plain, device = context(False), context(True)
    assert isinstance(device.train_loader, DeviceLoader)
    assert len(device.train_loader) == len(plain.train_loader)
    for split in ("train_loader", "val_loader"):
        want = labels_per_epoch(getattr(plain, split))
        got = labels_per_epoch(getattr(device, split))
        for w, g in zip(want, got, strict=True):
            assert Counter(g) == Counter(w) and len(g) == 100
    epochs = labels_per_epoch(device.train_loader)
    assert epochs[0] != epochs[1]  # shuffled anew each epoch, by index
    assert labels_per_epoch(device.val_loader)[0] == labels_per_epoch(plain.val_loader)[0]


def test_on_device_batches_follow_the_models_pipeline() -> None:
    """Same resize and normalization as the loader's (up to uint8 rounding), and the same shape."""
    plain, device = context(False), context(True)
    x_plain = torch.cat([x for x, _ in plain.val_loader])
    x_device = torch.cat([x for x, _ in device.val_loader])
    assert x_device.shape == x_plain.shape == (100, 3, 16, 16)
    assert x_device.dtype == torch.float32
    # 0.5/255 of rounding, divided by the smallest std (ImageNet's 0.225), then resampled.
    torch.testing.assert_close(x_device, x_plain, atol=0.03, rtol=0)


def test_digits_are_not_flipped_and_crop_pad_moves_pixels() -> None:
    device = context(True)
    train = device.train_loader
    assert isinstance(train, DeviceLoader)
    assert train.flip is False  # a flipped 2 is no 2
    padded = context(True, crop_pad=2).train_loader
    assert isinstance(padded, DeviceLoader) and padded.pad == 2
    images = padded.images[:32]
    plain_batch = train.batch(images)
    cropped = padded.batch(images)
    assert cropped.shape == plain_batch.shape
    assert not torch.equal(cropped, plain_batch)


def test_flip_and_crop_keep_pixels_of_the_image() -> None:
    """Flipping twice is the identity and a crop of a 0-padded window equals the input."""
    pipe = Pipeline(
        img_size=4, mean=(0.0,) * 3, std=(1.0,) * 3, interpolation="bilinear", crop_pct=1
    )
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    loader = DeviceLoader(
        images,
        torch.tensor([0, 1]),
        pipe,
        batch_size=2,
        device=torch.device("cpu"),
        train=True,
        flip=True,
        seed=0,
    )
    out = torch.stack([loader.batch(images) for _ in range(16)])
    straight = images.float() / 255.0
    for sample in out:
        for i in range(2):
            assert torch.equal(sample[i], straight[i]) or torch.equal(
                sample[i], straight[i].flip(2)
            )
    assert any(not torch.equal(s[0], straight[0]) for s in out)  # some were flipped


def test_uint8_split_reads_cifar_arrays_through_subsets() -> None:
    class FakeCifar(torch.utils.data.Dataset):
        def __init__(self) -> None:
            self.data = np.arange(5 * 2 * 2 * 3, dtype=np.uint8).reshape(5, 2, 2, 3)
            self.targets = [0, 1, 2, 3, 4]

        def __len__(self) -> int:
            return 5

    base = FakeCifar()
    images, labels = uint8_split(Subset(Subset(base, [4, 3, 1]), [2, 0]))
    assert labels.tolist() == [1, 4]
    assert images.shape == (2, 3, 2, 2) and images.dtype == torch.uint8
    assert torch.equal(images[0], torch.from_numpy(base.data[1]).permute(2, 0, 1))


def test_on_device_refuses_datasets_that_do_not_fit_in_memory() -> None:
    with pytest.raises(ValueError, match=r"on_device.*imagefolder"):
        DatasetConfig(name="imagefolder", on_device=True)
    with pytest.raises(ValueError, match="crop_pad"):
        DatasetConfig(name="digits", crop_pad=2)


def test_on_device_is_recorded_and_a_trial_learns() -> None:
    from trainables.loop.fit import fit
    from trainables.loop.reporting import ListReporter

    torch.manual_seed(0)
    ctx = context(True)
    model = create_model(ctx.cfg.model, 10)
    reporter = ListReporter()
    fit(ctx, model, reporter, epochs=4)
    rows = [r for r in reporter.reports if "train/loss" in r]
    losses = [r["train/loss"] for r in rows]
    assert len(rows) == 4 and isinstance(ctx.train_loader, DeviceLoader)
    # It learns from the batches on the device: the loss falls, accuracy leaves chance (0.1).
    assert losses[-1] < 0.8 * losses[0], losses
    assert rows[-1]["train/acc"] > 0.3, [r["train/acc"] for r in rows]
    assert all(r["time/data_s"] >= 0 for r in rows)
