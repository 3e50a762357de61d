"""`python -m orchestrator compare A B` on synthetic tables: matching, pooling, each verdict,
--fail-on, the JSON and HTML outputs, environments that differ."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.cli import main
from orchestrator.report.compare import (
    IMPROVEMENT,
    REGRESSION,
    WITHIN,
    compare_sides,
    load_side,
    parse_threshold,
    verdict,
)
from tests.report_tables import write_seeds

LRS = (1e-3, 3e-3)


def _write(path: Path, seed: int, **kw: object) -> Path:
    kw = {"lrs": LRS, "seeds": 4, **kw}
    return write_seeds(path, np.random.default_rng(seed), **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def outs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cmp")
    return {
        "a": _write(root / "a", 1),
        "same": _write(root / "same", 2),
        "slow": _write(root / "slow", 3, slowdown=2.0),
        "fast": _write(root / "fast", 4, slowdown=0.5),
        "half": _write(root / "half", 5, batch_size=32, lrs=(1e-3, 1e-2)),
    }


def _rows(a: Path, b: Path, **kw: object) -> list:
    rows, _ = compare_sides(load_side(str(a)), load_side(str(b)), **kw)  # type: ignore[arg-type]
    return rows


def test_matching_ignores_what_no_side_searched_and_pools_seeds(outs: dict[str, Path]) -> None:
    # B ran another batch size throughout (not searched): its trials still match A's by lr.
    rows, unmatched = compare_sides(load_side(str(outs["a"])), load_side(str(outs["half"])))
    assert {r.match for r in rows} == {"vit_tiny_patch16_224 lr=0.001"}
    assert unmatched == {
        "a": ["vit_tiny_patch16_224 lr=0.003"],
        "b": ["vit_tiny_patch16_224 lr=0.01"],
    }
    acc = next(r for r in rows if r.metric == "best/val/acc")
    assert (acc.n_a, acc.n_b) == (4, 4) and acc.noise_from == "seeds"


def test_same_sweep_twice_is_within_noise(outs: dict[str, Path]) -> None:
    rows = _rows(outs["a"], outs["same"], metrics=["time/", "latency"])
    assert rows and {r.verdict for r in rows} == {WITHIN}
    epoch = next(r for r in rows if r.metric == "time/epoch_s")
    assert epoch.noise is not None and epoch.noise > 0


def test_a_planted_slowdown_is_a_regression_and_a_speedup_an_improvement(
    outs: dict[str, Path],
) -> None:
    slow = {r.metric: r for r in _rows(outs["a"], outs["slow"]) if r.match.endswith("0.001")}
    assert slow["time/epoch_s"].verdict == REGRESSION
    assert slow["time/epoch_s"].change == pytest.approx(2.0, rel=0.15)
    assert slow["time/samples_per_s"].verdict == REGRESSION  # higher is better: halved
    assert slow["latency p50 32px bs1 fp32"].verdict == REGRESSION
    assert slow["flops/fwd_gmacs"].verdict == WITHIN  # same model, same MACs
    fast = {r.metric: r for r in _rows(outs["a"], outs["fast"])}
    assert fast["time/step_ms_p50"].verdict == IMPROVEMENT
    assert fast["time/samples_per_s"].verdict == IMPROVEMENT


def test_verdict_rule_and_threshold() -> None:
    assert verdict(0.04, 0.05, higher_is_better=False) == WITHIN
    assert verdict(0.06, 0.05, higher_is_better=False) == REGRESSION
    assert verdict(0.06, 0.05, higher_is_better=True) == IMPROVEMENT
    assert verdict(-2.0, 1.0, higher_is_better=True) == REGRESSION
    assert parse_threshold("5%") == pytest.approx(0.05) == parse_threshold("0.05")
    with pytest.raises(ValueError, match="--threshold 'fast'"):
        parse_threshold("fast")


def test_one_trial_each_takes_noise_from_epochs_and_latency_stdev(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", 1, lrs=(1e-3,), seeds=1, epochs=3)
    b = _write(tmp_path / "b", 2, lrs=(1e-3,), seeds=1, epochs=3)
    rows = {r.metric: r for r in _rows(a, b)}
    assert rows["time/epoch_s"].noise_from == "epochs after the first"
    assert rows["time/epoch_s"].n_a == 2  # epochs 2 and 3
    assert rows["latency p50 32px bs1 fp32"].noise_from == "latency stdev"
    assert rows["params/total"].noise_from == "none (threshold only)"


def test_cli_fail_on_json_html_and_environment(
    outs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, same, slow = (str(outs[k]) for k in ("a", "same", "slow"))
    assert main(["compare", a, same, "--fail-on", "regression"]) == 0
    assert "within noise" in capsys.readouterr().out
    assert main(["compare", a, slow]) == 0  # a regression fails only with --fail-on
    capsys.readouterr()
    html = tmp_path / "cmp.html"
    code = main(
        [
            "compare",
            a,
            f"{slow}:seeds",
            "--fail-on",
            "regression",
            "--json",
            "--metric",
            "epoch",
            "--html",
            str(html),
        ]
    )
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["regressions"] == 2 and {r["metric"] for r in report["rows"]} == {"time/epoch_s"}
    page = html.read_text(encoding="utf-8")
    assert 'id="compare"' in page and "regression" in page
    # A different torch version is printed first.
    env_dir = tmp_path / "env" / "trials"
    env_dir.mkdir(parents=True)
    for part in sorted((outs["same"] / "trials").glob("*.parquet")):
        t = pq.read_table(part).to_pandas().assign(**{"env/torch": "9.9.9"})
        pq.write_table(pa.Table.from_pandas(t), env_dir / part.name)
    assert main(["compare", a, str(tmp_path / "env")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Environments differ") and "9.9.9" in out.split("\n\n")[0]
    assert main(["compare", a, f"{same}:nope"]) == 2
    assert "no trials of sweep 'nope'" in capsys.readouterr().err


def _scale_epochs(out: Path, factors: dict[int, float]) -> Path:
    """Multiply time/epoch_s of the given epochs (1-based) in every epochs table under `out`."""
    for f in (out / "epochs").glob("*.parquet"):
        t = pq.read_table(f).to_pandas()
        for e, k in factors.items():
            t.loc[t["epoch"] == e, "time/epoch_s"] *= k
        pq.write_table(pa.Table.from_pandas(t, preserve_index=False), f)
    return out


def test_one_stalled_epoch_neither_hides_a_slowdown_nor_makes_one(tmp_path: Path) -> None:
    one = {"lrs": (1e-3,), "seeds": 1, "epochs": 6}
    a = _write(tmp_path / "a", 1, **one)
    stalled = _scale_epochs(_write(tmp_path / "stalled", 1, **one), {4: 10.0})
    slow_and_stalled = _scale_epochs(
        _write(tmp_path / "slow", 1, **one), {2: 1.5, 3: 1.5, 4: 15.0, 5: 1.5, 6: 1.5}
    )

    (same,) = _rows(a, stalled, metrics=["epoch_s"])
    assert same.verdict == WITHIN and same.change == pytest.approx(1.0, abs=0.05)
    (slow,) = _rows(a, slow_and_stalled, metrics=["epoch_s"])
    assert slow.verdict == REGRESSION and slow.change == pytest.approx(1.5, rel=0.1)
    assert slow.noise is not None and slow.noise < 0.5  # mean and stdev: a band of ~±1700%


def test_caveats_name_verdicts_from_one_run_each(
    outs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = {"lrs": (1e-3,), "seeds": 1, "epochs": 4}
    a, b = _write(tmp_path / "a", 1, **one), _write(tmp_path / "b", 2, slowdown=2.0, **one)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    (note,) = json.loads(capsys.readouterr().out)["caveats"]
    assert "one run per side" in note and "flagged" in note
    assert main(["compare", str(a), str(b)]) == 0
    assert "note: " in capsys.readouterr().out
    assert main(["compare", str(outs["a"]), str(outs["same"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["caveats"] == []  # seeds: repeats on both sides
