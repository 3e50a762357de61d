"""Parquet parts share one schema, so pandas reads a table whatever part it looks at first."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from orchestrator.tables import PARAM_COLUMNS, PartitionedTable, flatten_params


def test_new_column_in_a_later_part_is_readable_everywhere(tmp_path: Path) -> None:
    t = PartitionedTable(tmp_path, "epochs")
    t.write_part("a", [{"sweep": "s", "trial_id": "a", "epoch": 1, "val/acc": 0.5}])
    t.write_part(
        "b", [{"sweep": "s", "trial_id": "b", "epoch": 1, "val/acc": 0.6, "mem/x_mb": 3.0}]
    )
    df = pd.read_parquet(tmp_path / "epochs")
    assert len(df) == 2 and "mem/x_mb" in df.columns
    assert (
        df.set_index("trial_id").loc["a", "mem/x_mb"]
        != df.set_index("trial_id").loc["a", "mem/x_mb"]
    )  # NaN


def test_reopened_table_keeps_schema_and_rewrites_atomically(tmp_path: Path) -> None:
    PartitionedTable(tmp_path, "t").write_part("a", [{"trial_id": "a", "k/v": 1.0, "note": "x"}])
    t = PartitionedTable(tmp_path, "t")
    assert "note" in t.schema
    t.write_part("a", [{"trial_id": "a", "k/v": 2.0}])
    assert pd.read_parquet(tmp_path / "t")["k/v"].tolist() == [2.0]
    assert not list((tmp_path / "t").glob(".*tmp"))  # no tmp files left


def test_params_flatten_to_typed_dotted_columns() -> None:
    flat = flatten_params(
        {
            "trainable": "lora",
            "optim": {"lr": 1},
            "lora": {"rank": 16},
            "model": {"kwargs": {"depth": 2}},
        }
    )
    assert flat["optim.lr"] == 1.0 and isinstance(flat["optim.lr"], float)
    assert flat["lora.rank"] == 16 and flat["model.kwargs"] == '{"depth": 2}'
    assert set(flat) == set(PARAM_COLUMNS)


def test_sections_a_trainable_does_not_read_are_null() -> None:
    """A `train` trial has no prune ratio or LoRA rank, whatever defaults its config carries."""
    train = flatten_params({"trainable": "train"})
    assert train["prune.ratio"] is None and train["lora.rank"] is None
    assert train["finetune.checkpoint"] is None and train["optim.lr"] is not None
    prune = flatten_params({"trainable": "prune_recover", "prune": {"ratio": 0.3}})
    assert prune["prune.ratio"] == 0.3 and prune["lora.rank"] is None


def test_concurrent_writers_keep_every_column_and_row(tmp_path: Path) -> None:
    """Two processes (two sweeps into one output) each adding columns: no part loses its rows,
    and `pandas.read_parquet(dir)` sees every column of every part."""
    import multiprocessing as mp

    # fork: the children need no second import of torch (the metric declarations pull it in).
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(tmp_path, w)) for w in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    df = pd.read_parquet(tmp_path / "t")
    assert len(df) == 2 * N_PARTS
    assert df.groupby("sweep").size().to_dict() == {"a": N_PARTS, "b": N_PARTS}
    for w in ("a", "b"):
        mine = df[df["sweep"] == w]
        assert mine[f"{w}/col{N_PARTS - 1}"].notna().sum() == 1  # the last part's own column
        assert mine[f"{w}/col0"].notna().sum() == 1


N_PARTS = 12


def _writer(root: Path, who: str) -> None:
    table = PartitionedTable(root, "t")
    for i in range(N_PARTS):
        # Each part brings a column nobody has: every write is a table-wide schema change.
        table.write_part(
            f"{who}{i}", [{"sweep": who, "trial_id": f"{who}{i}", f"{who}/col{i}": 1.0}]
        )
