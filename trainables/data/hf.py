"""Hugging Face `datasets` image-classification sets as lvmbench datasets: `hf/<id>` or `hf:<path>`.

`open_hf_dataset` (registered for the `hf/` and `hf:` prefixes in `trainables.registry`) reads:

- `hf/<dataset id>`: `datasets.load_dataset(id)`, from the local cache when offline
  (`HF_DATASETS_OFFLINE=1` / `HF_HUB_OFFLINE=1`); a set that is not there fails with the id and
  the cache path;
- `hf:<folder>` written by `save_to_disk` (a Dataset or a DatasetDict): `datasets.load_from_disk`;
- `hf:<file.parquet>` or `hf:<folder of Parquet files>`: `load_dataset("parquet", ...)`, splits
  named by the files as `datasets` names them (`train-*.parquet`, `test.parquet`, `validation/`).

Columns: `dataset.image_column` (None = the first `Image` feature, else `image` / `img`) and
`dataset.label_column` (None = the first `ClassLabel`, else `label` / `labels`). Splits:
`dataset.train_split` and `dataset.val_split` (None = `validation`, `valid`, `val` or `test`,
whichever exists; a set with one split gives `val_fraction` of it, a fixed draw). Class names come
from the `ClassLabel`, else the sorted distinct labels of the training split. Images go through
the model's pipeline like any folder of photos (resize, no evaluation crop: such sets are often
small images such as CIFAR's).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from trainables.config import DatasetConfig
from trainables.data.loaders import DatasetMissingError, RawData

VAL_SPLITS = ("validation", "valid", "val", "test")
IMAGE_COLUMNS = ("image", "img", "pixel_values")
LABEL_COLUMNS = ("label", "labels", "fine_label")
SPLIT_SEED = 1234  # the same held-out draw for every trial of a sweep


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "dataset.name 'hf/...' / 'hf:...' needs the datasets package: pip install 'lvmbench[hf]'"
        ) from err
    return datasets


class HFImageDataset(Dataset):
    """(image, label index) pairs of one split; `transform` is set by `attach_pipeline`."""

    def __init__(
        self, data: Any, image_column: str, label_column: str, label_index: dict[Any, int] | None
    ) -> None:
        self.data = data
        self.image_column = image_column
        self.label_column = label_column
        self.label_index = label_index
        self.transform: Any = None

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        row = self.data[int(i)]
        image = row[self.image_column]
        if hasattr(image, "convert"):
            image = image.convert("RGB")
        label = row[self.label_column]
        label = self.label_index[label] if self.label_index is not None else int(label)
        if self.transform is not None:
            image = self.transform(image)
        return image, label


def load_splits(name: str) -> Any:
    """The `datasets` object behind `name`: a DatasetDict, or a Dataset of one split."""
    datasets = _datasets()
    if name.startswith("hf:"):
        path = Path(name[3:])
        if not path.exists():
            raise DatasetMissingError(f"dataset.name {name!r}: {path} does not exist")
        if (
            path.is_dir()
            and any(
                (path / f).is_file()
                for f in ("dataset_dict.json", "state.json", "dataset_info.json")
            )
            and not any(path.rglob("*.parquet"))
        ):
            return datasets.load_from_disk(str(path))
        if path.is_file():
            return datasets.load_dataset("parquet", data_files={"train": str(path)})
        if not any(path.rglob("*.parquet")):
            raise DatasetMissingError(
                f"dataset.name {name!r}: {path} holds neither a save_to_disk dataset nor Parquet "
                "files"
            )
        return datasets.load_dataset("parquet", data_dir=str(path))
    repo = name.removeprefix("hf/")
    try:
        return datasets.load_dataset(repo)
    except Exception as err:  # offline misses surface as several error types across versions
        cache = datasets.config.HF_DATASETS_CACHE
        raise DatasetMissingError(
            f"dataset.name {name!r}: cannot load {repo!r} ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Offline, it must be in the local "
            f"cache ({cache}, or the hub cache): load it once where the hub is reachable, or "
            "save it with to_parquet / save_to_disk and use 'hf:<path>'."
        ) from err


def _pick(columns: list[str], wanted: str | None, guesses: tuple[str, ...], what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(
                f"dataset.{what}_column {wanted!r}: no such column (columns: {', '.join(columns)})"
            )
        return wanted
    found = next((c for c in guesses if c in columns), None)
    if found is None:
        raise ValueError(
            f"dataset.{what}_column: cannot tell which column holds the {what}s (columns: "
            f"{', '.join(columns)}); set dataset.{what}_column"
        )
    return found


def open_hf_dataset(cfg: DatasetConfig, img_size: int, seed: int) -> RawData:
    datasets = _datasets()
    loaded = load_splits(cfg.name)
    splits: dict[str, Any] = (
        dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {cfg.train_split: loaded}
    )
    if cfg.train_split not in splits:
        raise ValueError(
            f"dataset.train_split {cfg.train_split!r}: {cfg.name} has splits {', '.join(splits)}"
        )
    train = splits[cfg.train_split]
    if cfg.val_split is not None:
        if cfg.val_split not in splits:
            raise ValueError(
                f"dataset.val_split {cfg.val_split!r}: {cfg.name} has splits {', '.join(splits)}"
            )
        val = splits[cfg.val_split]
    else:
        name = next((s for s in VAL_SPLITS if s in splits and s != cfg.train_split), None)
        if name is not None:
            val = splits[name]
        else:
            parts = train.train_test_split(test_size=cfg.val_fraction, seed=SPLIT_SEED)
            train, val = parts["train"], parts["test"]

    features = train.features
    image_guesses = tuple(c for c, f in features.items() if isinstance(f, datasets.Image))
    label_guesses = tuple(c for c, f in features.items() if isinstance(f, datasets.ClassLabel))
    columns = list(features)
    image_col = _pick(columns, cfg.image_column, image_guesses + IMAGE_COLUMNS, "image")
    label_col = _pick(columns, cfg.label_column, label_guesses + LABEL_COLUMNS, "label")

    feature = features[label_col]
    if isinstance(feature, datasets.ClassLabel):
        class_names, index = list(feature.names), None
    else:
        values = sorted(set(train[label_col]) | set(val[label_col]), key=str)
        class_names = [str(v) for v in values]
        index = {v: i for i, v in enumerate(values)}
    if len(class_names) < 2:
        raise ValueError(f"dataset.label_column {label_col!r}: {cfg.name} has fewer than 2 classes")
    return RawData(
        train=HFImageDataset(train, image_col, label_col, index),
        val=HFImageDataset(val, image_col, label_col, index),
        num_classes=len(class_names),
        class_names=class_names,
    )


def hf_dataset_cached(name: str) -> bool:
    """Whether `hf/<id>` has files in the local datasets or hub cache (an `hf:` path: exists)."""
    if name.startswith("hf:"):
        return Path(name[3:]).exists()
    repo = name.removeprefix("hf/")
    try:
        from huggingface_hub import constants

        datasets = _datasets()
    except ImportError:
        return False
    hub = Path(constants.HF_HUB_CACHE) / f"datasets--{repo.replace('/', '--')}"
    local = Path(datasets.config.HF_DATASETS_CACHE) / repo.replace("/", "___")
    return hub.is_dir() or local.is_dir()
