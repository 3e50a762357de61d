"""`imagenet`: the ILSVRC-2012 classification set in the layouts people keep it in.

Under `dataset.root` (or under `root/ILSVRC/Data/CLS-LOC`, the Kaggle layout):

- `train/<wnid>/*.JPEG`: one folder per class (`n01440764`, ...);
- `val/` either in class folders as well (after the usual `valprep.sh`), or flat
  (`val/ILSVRC2012_val_00000001.JPEG`, ...) with `LOC_val_solution.csv` (`ImageId,PredictionString`,
  the first token of the prediction string is the image's wnid) in `root` or the folder above it.

Class indices follow the sorted train folders, as torchvision's ImageFolder numbers them, so the
flat and foldered val splits label the same images alike. Evaluation takes the model's centre crop.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from trainables.config import DatasetConfig
from trainables.data.loaders import DatasetMissingError, RawData

SOLUTION_CSV = "LOC_val_solution.csv"
KAGGLE_SUBDIR = Path("ILSVRC") / "Data" / "CLS-LOC"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


class FlatValSet(Dataset):
    """Flat val images labelled by the solution file; `transform` is set by `attach_pipeline`."""

    def __init__(self, samples: list[tuple[str, int]], classes: list[str]) -> None:
        self.samples = samples
        self.targets = [t for _, t in samples]
        self.classes = classes
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        from torchvision.datasets.folder import default_loader

        path, target = self.samples[i]
        image = default_loader(path)
        if self.transform is not None:
            image = self.transform(image)
        return image, target


def locate(root: Path) -> Path:
    """The folder holding `train/`: `root` itself or its Kaggle subfolder."""
    for base in (root, root / KAGGLE_SUBDIR):
        if (base / "train").is_dir():
            return base
    raise DatasetMissingError(
        f"dataset.root: imagenet expects class folders under {root}/train (<wnid>/*.JPEG) or "
        f"under {root / KAGGLE_SUBDIR}/train; neither exists"
    )


def _solution_file(root: Path, base: Path) -> Path | None:
    for folder in dict.fromkeys((base, root, base.parent, root.parent)):
        if (folder / SOLUTION_CSV).is_file():
            return folder / SOLUTION_CSV
    return None


def read_solution(path: Path, val_dir: Path, class_index: dict[str, int]) -> list[tuple[str, int]]:
    """(image path, class index) for every row of a LOC_val_solution.csv."""
    samples = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            image_id, prediction = row["ImageId"], row["PredictionString"]
            wnid = prediction.split()[0] if prediction.strip() else ""
            if wnid not in class_index:
                raise DatasetMissingError(
                    f"{path}: image {image_id} is labelled {wnid!r}, which has no train folder"
                )
            file = next(
                (
                    val_dir / f"{image_id}{s}"
                    for s in (".JPEG", *IMAGE_SUFFIXES)
                    if (val_dir / f"{image_id}{s}").is_file()
                ),
                None,
            )
            if file is None:
                raise DatasetMissingError(f"{path}: image {image_id} is not in {val_dir}")
            samples.append((str(file), class_index[wnid]))
    return sorted(samples)


def open_imagenet(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
    from torchvision import datasets

    root = Path(cfg.root)
    base = locate(root)
    train = datasets.ImageFolder(str(base / "train"))
    val_dir = base / "val"
    if not val_dir.is_dir():
        raise DatasetMissingError(f"dataset.root: imagenet expects val images under {val_dir}")
    class_index = train.class_to_idx
    val: Dataset
    if any(p.is_dir() for p in val_dir.iterdir()):
        val = datasets.ImageFolder(str(val_dir))
        if val.classes != train.classes:
            raise DatasetMissingError(
                f"dataset.root: val class folders under {val_dir} differ from train's "
                f"({len(val.classes)} vs {len(train.classes)} classes)"
            )
    else:
        solution = _solution_file(root, base)
        if solution is None:
            raise DatasetMissingError(
                f"dataset.root: {val_dir} holds flat images but no {SOLUTION_CSV} was found in "
                f"{base}, {root} or their parent folders; put it there or sort val into class "
                "folders"
            )
        val = FlatValSet(read_solution(solution, val_dir, class_index), list(train.classes))
    return RawData(
        train=train,
        val=val,
        num_classes=len(train.classes),
        class_names=list(train.classes),
        crop=True,
    )
