"""The HTML report: sections follow the data, numbers equal Parquet, nothing is fetched."""

from __future__ import annotations

import base64
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main as cli_main
from orchestrator.report import build_report
from orchestrator.report import columns as C
from orchestrator.report.pareto import pareto_mask
from orchestrator.report.recommendations import recommendations
from orchestrator.report.sections import format_value
from tests.report_html import parse
from tests.report_tables import read, write_all, write_lora, write_quickstart

ALL_SECTIONS = {
    "overview",
    "recommendations",
    "summary",
    "complexity",
    "curves",
    "family_curves",  # several model families with per-epoch rows
    "latency",
    "memory",
    "lora",
    "pruning",
    "sensitivity",
    "weights",
    "environment",
}


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """Three sweeps (train, lora, prune_recover) in one output, and their report."""
    root = tmp_path_factory.mktemp("report")
    out = write_all(root / "out")
    html_path = build_report(out, root / "site" / "report.html", static=True)
    return out, html_path, html_path.read_text(encoding="utf-8")


def test_every_section_with_data_is_present(full: tuple[Path, Path, str]) -> None:
    _, _, html = full
    page = parse(html)
    assert set(page.sections) == ALL_SECTIONS  # and no "problems" section: every figure drew
    # One summary table per sweep, one row per trial.
    for sweep, n in (("quickstart", 4), ("lora_ranks", 4), ("prune_recover", 6)):
        assert len(page.tables[f"summary-{sweep}"].rows) == n


def test_summary_numbers_equal_parquet(full: tuple[Path, Path, str]) -> None:
    out, _, html = full
    trials = read(out, "trials").set_index("trial_id")
    epochs = read(out, "epochs")
    page = parse(html)
    checked = 0
    for sweep in ("quickstart", "lora_ranks", "prune_recover"):
        table = page.tables[f"summary-{sweep}"]
        for rec in table.records():
            tid = rec["trial_id"][0]
            rows = epochs[epochs["trial_id"] == tid]
            for col, (text, value) in rec.items():
                if col not in trials.columns or value is None:
                    continue
                # Memory is the peak over the epochs; everything else is as `trials` stores it.
                is_mem = col.startswith("mem/") and col.endswith("_mb")
                stored = rows[col].max() if is_mem else trials.at[tid, col]
                assert float(value) == pytest.approx(float(stored), rel=0, abs=0), (tid, col)
                assert text == format_value(stored, col).text
                checked += 1
            # best/val/acc is also the maximum of the trial's epoch rows, to the last bit.
            best = epochs.loc[epochs["trial_id"] == tid, "val/acc"].max()
            assert float(rec["best/val/acc"][1]) == best
            assert rec["best/val/acc"][0] == f"{best:.3f}"
            assert int(rec["epochs"][1]) == (epochs["trial_id"] == tid).sum()
    assert checked > 100


def test_best_row_first_and_marked(full: tuple[Path, Path, str]) -> None:
    out, _, html = full
    trials = read(out, "trials")
    table = parse(html).tables["summary-quickstart"]
    accs = [float(r["best/val/acc"][1]) for r in table.records()]
    assert accs == sorted(accs, reverse=True)
    qs = trials[trials["sweep"] == "quickstart"]
    assert table.records()[0]["trial_id"][0] == qs.loc[qs["best/val/acc"].idxmax(), "trial_id"]
    assert re.search(r'<tr class="best"><td>resnet18 lr=0.001</td>', html)


def test_best_val_acc_printed_and_opens_offline(full: tuple[Path, Path, str]) -> None:
    out, _, html = full
    best = read(out, "epochs")["val/acc"].max()
    assert f"{best:.3f}" in html and f"{100 * best:.1f}" in html
    page = parse(html)
    # Nothing to fetch: every src is inline data, every href an anchor on the page.
    assert page.links, "expected images and nav links"
    for tag, attr, value in page.links:
        ok = value.startswith("data:image/png;base64,") if attr == "src" else value.startswith("#")
        assert ok, (tag, attr, value[:60])
    assert not re.search(r"https?://|url\(|@import|<link\b", html)
    assert len(html) > 20_000
    assert html.count("data:image/png") >= 3


def test_plots_written_beside_the_html(full: tuple[Path, Path, str]) -> None:
    _, html_path, html = full
    page = parse(html)
    plot_dir = html_path.parent / "report_plots"
    files = sorted(p.stem for p in plot_dir.glob("*.png"))
    assert files == sorted(page.plots)
    assert len(files) >= 10  # most figures are drawn once per sweep here
    for name, src in zip(page.plots, page.img_srcs, strict=True):
        png = base64.b64decode(src.removeprefix("data:image/png;base64,"))
        assert png.startswith(b"\x89PNG") and png == (plot_dir / f"{name}.png").read_bytes()


def test_recommendations_name_pareto_and_cheapest(full: tuple[Path, Path, str]) -> None:
    _, _, html = full
    # prune_recover: structured pruning at 0.2 is within one point of the best (unstructured 0.2)
    # at 20% fewer MACs; the fixture's MACs fall as 1 - ratio for structured pruning.
    assert re.search(
        r"Cheapest within one point of the best \(forward compute\): "
        r"resnet18 method=structured ratio=0.2 at 0.0298 GMACs, 20% less",
        html,
    )
    assert "Pareto-optimal in val/acc vs forward compute: resnet18 lr=0.001." in html
    # lora_ranks: every adapter trails the full fine-tune (rank 0, 0.90) by two points or more.
    assert "Smallest LoRA rank within one point" not in html


def _lora_sweep(out: Path, best: dict[int, float]) -> None:
    """A `lora` sweep: one trial per rank with the given best val/acc (two epochs, exact values)."""
    for rank, acc in best.items():
        tid = f"r{rank}"
        base = {
            "sweep": "lora",
            "trial_id": tid,
            "model.name": "vit_tiny_patch16_224",
            "lora.rank": rank,
        }
        epochs = [{**base, "epoch": 1, "val/acc": acc - 0.1}, {**base, "epoch": 2, "val/acc": acc}]
        _write_rows(out, "epochs", tid, epochs)
        pct = 100.0 if rank == 0 else 0.25 * rank
        trial = {**epochs[-1], "best/val/acc": acc, "params/trainable_pct": pct}
        _write_rows(out, "trials", tid, [{**trial, "status": "TERMINATED", "error": None}])


def test_smallest_lora_rank_within_one_point_is_recommended(tmp_path: Path) -> None:
    # Rank 4 is 1.5 points behind the best (rank 16): out. Rank 8 is 0.8 points behind: the
    # smallest adapter within one point. Rank 0 (full fine-tune) is no adapter.
    _lora_sweep(tmp_path / "out", {0: 0.900, 4: 0.905, 8: 0.912, 16: 0.920})
    html = build_report(tmp_path / "out", tmp_path / "r.html", static=True).read_text(
        encoding="utf-8"
    )
    lines = [line for line in re.findall(r"<li>(.*?)</li>", html) if "LoRA rank" in line]
    assert lines == [
        "Smallest LoRA rank within one point of the best LoRA/full result: rank 8 "
        "(vit_tiny_patch16_224 rank=8), training 2% of the parameters, val/acc 0.912 (91.2%)."
    ]


def test_no_lora_rank_recommended_when_only_the_full_finetune_is_near_the_best(
    tmp_path: Path,
) -> None:
    _lora_sweep(tmp_path / "out", {0: 0.920, 4: 0.880, 8: 0.905, 16: 0.909})
    html = build_report(tmp_path / "out", tmp_path / "r.html", static=True).read_text(
        encoding="utf-8"
    )
    assert "Best accuracy: vit_tiny_patch16_224 rank=0" in html
    assert "Smallest LoRA rank" not in html


def test_sections_absent_without_their_data(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_quickstart(out, np.random.default_rng(0), gpu=False)
    shutil.rmtree(out / "latency")
    shutil.rmtree(out / "trials")
    page = parse(build_report(out, tmp_path / "r.html", static=True).read_text(encoding="utf-8"))
    # Epochs alone: curves (also per model family), summary and CPU memory; no cost axis but
    # memory for the trade-off.
    assert set(page.sections) == {
        "overview",
        "recommendations",
        "summary",
        "complexity",
        "curves",
        "family_curves",
        "memory",
    }
    header = page.tables["summary-quickstart"].header
    assert "flops/fwd_gmacs" not in header and "status" not in header
    assert "best/val/acc" in header and "mem/cpu_peak_rss_mb" in header


def test_several_outputs_under_one_directory(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    write_quickstart(tmp_path / "runs" / "a", rng)
    write_lora(tmp_path / "runs" / "b", rng)
    assert cli_main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "r.html")]) == 0
    page = parse((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert {"summary-quickstart", "summary-lora_ranks"} <= set(page.tables)
    assert "lora" in page.sections and "latency" in page.sections


def test_failed_trial_is_listed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_quickstart(out, np.random.default_rng(2))
    part = next((out / "trials").glob("*.parquet"))
    df = pq.read_table(part).to_pandas()
    df["status"] = "ERROR"
    df["error"] = (
        "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    )
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), part)
    html = build_report(out, tmp_path / "r.html", static=True).read_text(encoding="utf-8")
    assert "1 of 4 trials did not finish (status ERROR)" in html
    assert "CUDA out of memory. Tried to allocate 2 GiB" in html
    statuses = [r["status"][0] for r in parse(html).tables["summary-quickstart"].records()]
    assert sorted(statuses) == ["ERROR", "ok", "ok", "ok"]


def test_cli_errors_name_the_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["report", str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "no Parquet tables" in capsys.readouterr().err


def test_default_out_path_and_printed_path(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    write_lora(out, np.random.default_rng(3))
    assert cli_main(["report", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {out / 'report.html'}"
    assert (out / "report_plots" / "lora.png").is_file()


def test_pareto_mask_by_hand() -> None:
    cost = pd.Series([1.0, 2.0, 3.0, 2.0, None])
    score = pd.Series([0.5, 0.7, 0.6, 0.7, 0.99])
    # 2 is beaten by 1 (cheaper, better); 1 and 3 tie, neither beats the other; 4 has no cost.
    assert pareto_mask(cost, score).tolist() == [True, True, False, True, False]


def test_cheapest_within_one_point_by_hand() -> None:
    view = pd.DataFrame(
        {
            C.SWEEP: "s",
            C.TRIAL_ID: ["a", "b", "c"],
            C.LABEL: ["big", "mid", "small"],
            "best/val/acc": [0.900, 0.892, 0.850],
            C.GMACS: [4.0, 1.0, 0.5],
        }
    )
    lines = recommendations(view)
    assert lines[0] == "Best accuracy: big with val/acc 0.900 (90.0%)."
    assert (
        "Cheapest within one point of the best (forward compute): mid at 1 GMACs, 75% less "
        "than the best trial, with val/acc 0.892 (89.2%)." in lines
    )
    assert "Pareto-optimal in val/acc vs forward compute: big, mid, small." in lines
    # Beyond one point: nothing cheaper qualifies, so no "cheapest" line.
    view.loc[1, "best/val/acc"] = 0.889
    assert not [line for line in recommendations(view) if line.startswith("Cheapest")]


def test_schema_drift_between_parts_keeps_every_column(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "epochs").mkdir(parents=True)
    base = {"sweep": "s", "epoch": 1, "val/acc": 0.5, "model.name": "resnet18"}
    pq.write_table(pa.Table.from_pylist([{**base, "trial_id": "a"}]), out / "epochs" / "a.parquet")
    pq.write_table(
        pa.Table.from_pylist([{**base, "trial_id": "b", "lora.rank": 8, "val/acc": 0.75}]),
        out / "epochs" / "b.parquet",
    )
    # The atomic writer's in-flight file must be ignored.
    (out / "epochs" / ".b.parquet.tmp").write_bytes(b"partial")
    page = parse(build_report(out, tmp_path / "r.html", static=True).read_text(encoding="utf-8"))
    rec = {r["trial_id"][0]: r for r in page.tables["summary-s"].records()}
    assert rec["b"]["lora.rank"][0] == "8" and float(rec["b"]["lora.rank"][1]) == 8
    assert rec["a"]["lora.rank"][0] == "-"
    assert (
        "0.750"
        in page.tables["summary-s"].rows[0][page.tables["summary-s"].header.index("best/val/acc")][
            0
        ]
    )


def _write_rows(out: Path, table: str, part: str, rows: list[dict]) -> None:
    (out / table).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), out / table / f"{part}.parquet")


def test_memory_is_peak_over_epochs_and_json_config_reads_well(tmp_path: Path) -> None:
    out = tmp_path / "out"
    kwargs = {"a": '{"depth": 4, "patch_size": 8}', "b": "{}"}
    for tid, mem in (("a", (1000.0, 900.0)), ("b", (700.0, 800.0))):
        base = {"sweep": "s", "trial_id": tid, "model.name": "m", "model.kwargs": kwargs[tid]}
        epochs = [
            {**base, "epoch": e, "val/acc": 0.5 + 0.1 * e, "mem/cpu_peak_rss_mb": m}
            for e, m in enumerate(mem, start=1)
        ]
        _write_rows(out, "epochs", tid, epochs)
        # As the sink writes it: the final epoch's metrics.
        _write_rows(out, "trials", tid, [{**epochs[-1], "status": "TERMINATED", "error": None}])
    page = parse(build_report(out, tmp_path / "r.html", static=True).read_text(encoding="utf-8"))
    rec = {r["trial_id"][0]: r for r in page.tables["summary-s"].records()}
    assert rec["a"]["mem/cpu_peak_rss_mb"] == ("1,000", "1000.0")
    assert rec["b"]["mem/cpu_peak_rss_mb"] == ("800", "800.0")
    # A JSON dict of model kwargs reads as its items; an empty one adds nothing.
    assert rec["a"]["trial"][0] == "m depth=4 patch_size=8" and rec["b"]["trial"][0] == "m"


def test_pruning_recommendation_uses_recovered_accuracy(tmp_path: Path) -> None:
    view = pd.DataFrame(
        {
            C.SWEEP: "p",
            C.TRIAL_ID: ["r2", "r5", "r8"],
            C.LABEL: ["ratio=0.2", "ratio=0.5", "ratio=0.8"],
            C.PRUNE_METHOD: "unstructured",
            C.PRUNE_RATIO: [0.2, 0.5, 0.8],
            # Epoch 0 of recovery is the pruned model: best/val/acc alone would mislead.
            "best/val/acc": [0.95, 0.95, 0.95],
            "recovered/val/acc": [0.930, 0.921, 0.80],
        }
    )
    lines = recommendations(view)
    assert (
        "Highest unstructured pruning ratio within one point of the best recovered accuracy: "
        "0.5 (ratio=0.5), val/acc 0.921 (92.1%)." in lines
    )


def test_cost_per_run_and_per_accuracy_point(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_quickstart(out, np.random.default_rng(0), gpu=False)
    trials = read(out, "trials")
    trials["cost/usd"] = [0.004, 0.001, 0.002, None][: len(trials)]
    shutil.rmtree(out / "trials")
    (out / "trials").mkdir()
    pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), out / "trials" / "t.parquet")
    page = parse(build_report(out, tmp_path / "r.html", static=True).read_text(encoding="utf-8"))
    assert "cost" in page.sections
    table = page.tables["cost-quickstart"]
    col = {name: i for i, name in enumerate(table.header)}
    priced = trials[trials["cost/usd"].notna()]
    assert len(table.rows) == len(priced)  # the unpriced trial is left out, not shown as $0
    per_point = priced["cost/usd"] / (100 * priced["best/val/acc"])
    shown = [float(r[col["usd per accuracy point"]][1]) for r in table.rows]
    assert shown == sorted(shown)  # cheapest per point first
    assert shown == pytest.approx(sorted(per_point), rel=0.01)
    # Without a price the section is absent (the `full` report has none: ALL_SECTIONS).
