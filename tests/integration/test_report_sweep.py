"""The report of a real (tiny) sweep: run the orchestrator end to end, then report on its tables."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.report_html import CHROMIUM, PROBE, chromium, parse

pytestmark = pytest.mark.slow

# Two models, two epochs of three batches, latency at two sizes x two batch sizes: every section a
# `train` sweep can feed, in about a minute and a half on 2 cores.
SWEEP = """\
name: report_check
trainable: train
dataset: {name: digits, subset: 128}
optim: {batch_size: 32, epochs: 2, max_train_batches: 3, max_val_batches: 2, lr: 1.0e-3}
precision: fp32
search:
  model:
    grid:
      - {name: resnet18, img_size: 32}
      - {name: vit_tiny_patch16_224, img_size: 32, kwargs: {patch_size: 8, depth: 2}}
profilers:
  latency: {input_sizes: [32, 48], batch_sizes: [1, 4], warmup: 1, repeats: 3}
resources: {cpu: 1}
"""

TRAIN_SECTIONS = {
    "overview",
    "recommendations",
    "summary",
    "complexity",
    "curves",
    "family_curves",  # a ViT and a ResNet: two model families
    "latency",
    "memory",
    "environment",
}


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.yaml").write_text(SWEEP, encoding="utf-8")
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "orchestrator", str(root / "sweep.yaml")]
    run = subprocess.run(
        [*cmd, "--output", str(root / "out"), "--quiet"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    # A new MLflow store's set-up, Ray's and Tune's own warnings: in out/ray.log, not on the
    # terminal, which shows the sweep's own lines only.
    assert "Creating initial MLflow database tables" not in run.stdout + run.stderr
    assert "Creating initial MLflow database tables" in (root / "out" / "ray.log").read_text()
    # The sweep tells the user where the report comes from.
    assert f"python -m orchestrator report {root / 'out'}" in " ".join(run.stdout.split())
    report = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", str(root / "out"), "--static"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report.returncode == 0, report.stderr[-3000:]
    html_path = root / "out" / "report.html"
    assert report.stdout.strip() == f"report: {html_path}"
    return root / "out", html_path, html_path.read_text(encoding="utf-8")


def test_sections_follow_the_sweeps_data(swept: tuple[Path, Path, str]) -> None:
    _, _, html = swept
    page = parse(html)
    assert set(page.sections) == TRAIN_SECTIONS
    assert len(page.tables["summary-report_check"].rows) == 2
    assert sorted(page.plots) == [
        "curves",
        "family_curves",
        "latency_vs_input",
        "memory",
        "perf_vs_complexity",
    ]


def test_summary_equals_parquet(swept: tuple[Path, Path, str]) -> None:
    out, _, html = swept
    trials = pd.read_parquet(out / "trials").set_index("trial_id")
    epochs = pd.read_parquet(out / "epochs")
    table = parse(html).tables["summary-report_check"]
    checked = 0
    for rec in table.records():
        tid = rec["trial_id"][0]
        mine = epochs[epochs["trial_id"] == tid]
        assert rec["status"][0] == trials.at[tid, "status"]
        for col, (_text, value) in rec.items():
            if col not in trials.columns or value is None:
                continue
            peak = col.startswith("mem/") and col.endswith("_mb")
            stored = mine[col].max() if peak else trials.at[tid, col]
            assert float(value) == float(stored), (tid, col)
            checked += 1
        assert float(rec["best/val/acc"][1]) == mine["val/acc"].max()
    assert checked >= 20


def test_latency_table_equals_parquet(swept: tuple[Path, Path, str]) -> None:
    out, _, html = swept
    lat = pd.read_parquet(out / "latency")
    lat = lat[lat["tag"].fillna("") == ""]
    shown = parse(html).tables["latency"].records()
    assert len(shown) == len(lat) == 2 * 2 * 2  # trials x input sizes x batch sizes
    stored = sorted(lat["latency_ms_p50"].tolist())
    assert sorted(float(r["latency_ms_p50"][1]) for r in shown) == stored


def test_report_is_self_contained(swept: tuple[Path, Path, str]) -> None:
    out, html_path, html = swept
    best = pd.read_parquet(out / "epochs")["val/acc"].max()
    assert f"{best:.3f}" in html
    assert not re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"', html)
    assert not re.search(r"https?://", html)
    assert len(html) > 20_000 and html.count("data:image/png") >= 3
    assert sorted(p.stem for p in (html_path.parent / "report_plots").glob("*.png")) == sorted(
        parse(html).plots
    )


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium not installed")
def test_real_report_draws_in_chromium(swept: tuple[Path, Path, str], tmp_path: Path) -> None:
    _, _, html = swept
    probed = tmp_path / "probed.html"
    probed.write_text(html.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    run = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', run.stdout)
    assert found, run.stderr[-2000:]
    drawn, images, _ = map(int, found.groups())
    assert drawn == images == len(parse(html).plots)


def test_interactive_report_of_the_real_sweep(
    swept: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The default report of the same tables: plotly figures, plotly.js embedded once."""
    out, _, _ = swept
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "report",
            str(out),
            "--out",
            str(tmp_path / "i.html"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    html = (tmp_path / "i.html").read_text(encoding="utf-8")
    assert "could not be drawn" not in html
    assert html.count("lvmExplorer(document.getElementById") == 1
    # The explorer, curves, latency and memory are plotly figures; plotly.js is inlined once.
    assert html.count('class="iplot"') == 4
    assert html.count("* plotly.js v") == 1
    assert not re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:[^"]+)"', html)
