"""The report on tables a real sweep wrote: LoRA, pruning, sensitivity and weights sections.

Two --smoke sweeps through the CLI and Ray Tune into one output (a LoRA rank sweep, and a
train -> prune_recover stage sweep on tiny ViTs and digits), then `build_report(output)`. The
hand-made tables of `report_tables.py` test the report's arithmetic; this test guards the
contract between what the trainables write and what the report reads.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pandas as pd
import pytest

from orchestrator.cli import main
from orchestrator.report import build_report
from tests.report_html import ReportParser, parse
from tests.report_tables import read

pytestmark = pytest.mark.slow  # two sweeps, five Ray trials: about two minutes on 2 cores

# ViT-Tiny cut to one block of width 64 on 16 px inputs (4 patches of 8 px).
MODEL = """
model:
  name: vit_tiny_patch16_224
  img_size: 16
  kwargs: {patch_size: 8, depth: 1, embed_dim: 64, num_heads: 2}
dataset: {name: digits, subset: 64}
precision: fp32
profilers:
  latency: {input_sizes: [16], batch_sizes: [1], warmup: 1, repeats: 3}
  flops: {train_step: false}
resources: {cpu: 1}
"""

LORA_SWEEP = (
    """
name: lora_real
trainable: lora
optim: {lr: 1.0e-3, batch_size: 16, epochs: 1}
lora: {rank: 4, alpha: 8, dropout: 0.0, target_modules: [qkv, proj]}
search:
  lora.rank: {grid: [4, 8]}
checkpoint: {enabled: false}
"""
    + MODEL
)

PRUNE_SWEEP = (
    """
name: prune_real
optim: {lr: 1.0e-3, batch_size: 16, epochs: 1}
checkpoint: {enabled: true, num_to_keep: 1, metric: val/acc, mode: max}
stages:
  - name: dense
    trainable: train
  - name: prune
    trainable: prune_recover
    from: {stage: dense, metric: val/acc, mode: max}
    optim: {lr: 1.0e-4, warmup_epochs: 0}
    prune: {method: unstructured, recover_epochs: 1, sensitivity: true, histogram_bins: 16}
    search:
      prune.ratio: {grid: [0.3, 0.6]}
"""
    + MODEL
)

ONE_POINT = 0.01
EMBED, CLASSES = 64, 10


def lora_trainable_by_hand(rank: int) -> int:
    """qkv (64 -> 192) and attn.proj (64 -> 64) adapted in the one block; the head trains whole."""
    return rank * (EMBED + 3 * EMBED) + rank * (EMBED + EMBED) + EMBED * CLASSES + CLASSES


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, str]:
    """Both sweeps into one output; (output, its `trials` table, the report's HTML)."""
    tmp = tmp_path_factory.mktemp("real_sweep")
    out = tmp / "out"
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp / 'mlflow.db'}")
    try:
        for name, text in (("lora", LORA_SWEEP), ("prune", PRUNE_SWEEP)):
            (tmp / f"{name}.yaml").write_text(text)
            code = main([str(tmp / f"{name}.yaml"), "--smoke", "--output", str(out), "--quiet"])
            assert code == 0, f"the {name} sweep failed"
    finally:
        mp.undo()
    html = build_report(out, static=True).read_text(encoding="utf-8")
    return out, read(out, "trials"), html


def _section(html: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}".*?</section>', html, re.S)
    assert match, f"no section {sid!r}"
    return match.group(0)


def _bullets(html: str) -> list[str]:
    return re.findall(r"<li>(.*?)</li>", _section(html, "recommendations"))


def _labels(page: ReportParser, sweep: str) -> dict[str, str]:
    """trial_id -> the name the report gives that trial."""
    return {r["trial_id"][0]: r["trial"][0] for r in page.tables[f"summary-{sweep}"].records()}


def _assert_figure(out: Path, html: str, sid: str, title: str, plot: str) -> None:
    section = _section(html, sid)
    assert f"<h2>{title}</h2>" in section
    assert "<h3>Sweep " in section  # two sweeps in the output: one part per sweep with the data
    names = re.findall(r'data-plot="([^"]+)"', section)
    assert names == [plot], names
    src = re.search(r'src="data:image/png;base64,([^"]+)"', section)
    assert src, f"section {sid} has no image"
    png = base64.b64decode(src.group(1))
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
    assert png == (out / "report_plots" / f"{plot}.png").read_bytes()


def test_every_section_of_both_sweeps_draws(real: tuple[Path, pd.DataFrame, str]) -> None:
    _, trials, html = real
    assert set(trials["status"]) == {"TERMINATED"}
    page = parse(html)
    assert {"lora", "pruning", "sensitivity", "weights"} <= set(page.sections)
    assert "problems" not in page.sections, _section(html, "problems")
    assert len(page.tables["summary-lora_real"].rows) == 2
    assert len(page.tables["summary-prune_real"].rows) == 3  # dense + two pruning ratios


def test_lora_section_and_counts(real: tuple[Path, pd.DataFrame, str]) -> None:
    out, trials, html = real
    _assert_figure(out, html, "lora", "LoRA rank", "lora-lora_real")
    assert "Rank 0 is the full fine-tune baseline" in _section(html, "lora")
    # Float in a table that also holds other trainables (their lora.* params are null).
    rows = {
        int(float(r["lora.rank"][1])): r for r in parse(html).tables["summary-lora_real"].records()
    }
    assert sorted(rows) == [4, 8]
    for rank, row in rows.items():
        assert int(row["params/trainable"][1]) == lora_trainable_by_hand(rank)
        pct = 100 * lora_trainable_by_hand(rank) / float(row["params/total"][1])
        assert float(row["params/trainable_pct"][1]) == pytest.approx(pct)
    # The smallest rank within one point of the best, from the `trials` table.
    lora = trials[trials["sweep"] == "lora_real"]
    near = lora[lora["best/val/acc"] >= lora["best/val/acc"].max() - ONE_POINT]
    best = near.loc[near["lora.rank"].idxmin()]
    rank = int(best["lora.rank"])
    lines = [b for b in _bullets(html) if "LoRA rank" in b]
    assert lines == [
        f"Smallest LoRA rank within one point of the best LoRA/full result: rank {rank} "
        f"(vit_tiny_patch16_224 rank={rank}), training "
        f"{best['params/trainable_pct']:.3g}% of the parameters, val/acc "
        f"{best['best/val/acc']:.3f} ({100 * best['best/val/acc']:.1f}%)."
    ]


def test_pruning_section_and_recommendation(real: tuple[Path, pd.DataFrame, str]) -> None:
    out, trials, html = real
    _assert_figure(out, html, "pruning", "Pruning", "pruning-prune_real")
    assert "Accuracy right after pruning (dotted) and after recovery" in _section(html, "pruning")
    pruned = trials[trials["stage"] == "prune"].set_index("trial_id")
    assert sorted(pruned["prune.ratio"]) == [0.3, 0.6]
    # Global magnitude pruning zeroes the share it was asked for; the table shows it.
    rows = {r["trial_id"][0]: r for r in parse(html).tables["summary-prune_real"].records()}
    for tid, trial in pruned.iterrows():
        assert float(rows[tid]["prune/sparsity"][1]) == pytest.approx(
            trial["prune.ratio"], abs=0.01
        )
        for col in ("dense/val/acc", "pruned/val/acc", "recovered/val/acc"):
            assert float(rows[tid][col][1]) == trial[col], (tid, col)
    # The highest ratio a pruning trial ran whose recovered accuracy is within one point.
    near = pruned[pruned["recovered/val/acc"] >= pruned["recovered/val/acc"].max() - ONE_POINT]
    tid = near["prune.ratio"].idxmax()
    acc = pruned.at[tid, "recovered/val/acc"]
    label = _labels(parse(html), "prune_real")[tid]
    assert (
        f"Highest unstructured pruning ratio within one point of the best recovered accuracy: "
        f"{pruned.at[tid, 'prune.ratio']:g} ({label}), val/acc {acc:.3f} ({100 * acc:.1f}%)."
    ) in _bullets(html)


def test_sensitivity_and_weights_sections(real: tuple[Path, pd.DataFrame, str]) -> None:
    out, trials, html = real
    _assert_figure(out, html, "sensitivity", "Pruning sensitivity", "sensitivity-prune_real")
    assert "Each cell prunes one layer alone at one ratio" in _section(html, "sensitivity")
    _assert_figure(out, html, "weights", "Weight distributions", "weights-prune_real")
    assert "before pruning, right after it and" in _section(html, "weights")
    # What the two figures drew from: every pruning trial's scan and its three histograms.
    pruned = set(trials.loc[trials["stage"] == "prune", "trial_id"])
    sens = read(out, "sensitivity")
    assert set(sens["trial_id"]) == pruned
    assert {"blocks.0.attn.qkv", "blocks.0.mlp.fc1"} <= set(sens["layer"])
    assert sens["acc_drop"].notna().all()
    weights = read(out, "weights")
    assert set(weights["trial_id"]) == pruned
    assert set(weights["phase"]) == {"before", "pruned", "recovered"}
    overview = _section(html, "overview")
    assert f"sensitivity ({len(sens)} rows)" in overview
    assert f"weights ({len(weights)} rows)" in overview


def test_trial_names_show_what_was_searched_never_a_path(
    real: tuple[Path, pd.DataFrame, str],
) -> None:
    out, trials, html = real
    page = parse(html)
    names = {**_labels(page, "lora_real"), **_labels(page, "prune_real")}
    ratio = trials.set_index("trial_id")["prune.ratio"]
    for tid in trials.loc[trials["stage"] == "prune", "trial_id"]:
        assert f"ratio={ratio[tid]:g}" in names[tid], names[tid]
    for name in names.values():
        assert str(out) not in name and ".safetensors" not in name, name
    for line in _bullets(html):
        assert str(out) not in line, line
