"""`imagenet` reads the ILSVRC-2012 layouts: train class folders; val in class folders or flat with
LOC_val_solution.csv; under root or root/ILSVRC/Data/CLS-LOC (Kaggle). A tiny fake tree each time."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from trainables.config import DatasetConfig
from trainables.data.loaders import DatasetMissingError, open_data

WNIDS = ["n01440764", "n01443537", "n01484850"]


def _jpeg(path: Path, shade: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (10, 10), (shade, shade, shade)).save(path)


def fake_tree(base: Path, *, flat_val: bool) -> dict[str, str]:
    """2 train images per class; 2 val images per class. Returns val image id -> wnid."""
    truth = {}
    for c, wnid in enumerate(WNIDS):
        for i in range(2):
            _jpeg(base / "train" / wnid / f"{wnid}_{i}.JPEG", 40 * c)
            image_id = f"ILSVRC2012_val_{c * 2 + i + 1:08d}"
            truth[image_id] = wnid
            where = base / "val" / (f"{image_id}.JPEG" if flat_val else f"{wnid}/{image_id}.JPEG")
            _jpeg(where, 40 * c)
    return truth


def write_solution(path: Path, truth: dict[str, str]) -> None:
    lines = ["ImageId,PredictionString"]
    # Wnids listed in the opposite order of the folders: labels must still follow the folders.
    lines += [f"{i},{w} 1 2 30 40 {w} 3 4 20 20" for i, w in sorted(truth.items(), reverse=True)]
    path.write_text("\n".join(lines) + "\n")


def labels_by_image(raw) -> dict[str, str]:
    return {Path(p).stem: raw.class_names[t] for p, t in raw.val.samples}


def test_flat_val_with_solution_file(tmp_path: Path) -> None:
    truth = fake_tree(tmp_path, flat_val=True)
    write_solution(tmp_path / "LOC_val_solution.csv", truth)
    raw = open_data(DatasetConfig(name="imagenet", root=str(tmp_path)), 32)
    assert raw.class_names == WNIDS and raw.num_classes == 3
    assert len(raw.train) == 6 and len(raw.val) == 6
    assert labels_by_image(raw) == truth
    assert raw.crop  # evaluation takes the model's centre crop, as for photo folders


def test_val_in_class_folders_and_kaggle_layout(tmp_path: Path) -> None:
    base = tmp_path / "ILSVRC" / "Data" / "CLS-LOC"
    truth = fake_tree(base, flat_val=False)
    raw = open_data(DatasetConfig(name="imagenet", root=str(tmp_path)), 32)
    assert labels_by_image(raw) == truth
    # Kaggle puts the solution file beside ILSVRC/: flat val is found from root too.
    flat = tmp_path / "k2"
    truth = fake_tree(flat / "ILSVRC" / "Data" / "CLS-LOC", flat_val=True)
    write_solution(flat / "LOC_val_solution.csv", truth)
    raw = open_data(DatasetConfig(name="imagenet", root=str(flat)), 32)
    assert labels_by_image(raw) == truth


def test_flat_val_without_solution_is_explained(tmp_path: Path) -> None:
    fake_tree(tmp_path, flat_val=True)
    with pytest.raises(DatasetMissingError, match=r"LOC_val_solution\.csv"):
        open_data(DatasetConfig(name="imagenet", root=str(tmp_path)), 32)
    with pytest.raises(DatasetMissingError, match="train"):
        open_data(DatasetConfig(name="imagenet", root=str(tmp_path / "nothing")), 32)
