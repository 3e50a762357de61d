"""The report in a real browser: headless Chromium, network cut, every plot decoded and drawn."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from orchestrator.report import build_report
from tests.report_html import CHROMIUM, PROBE, chromium, parse
from tests.report_tables import write_all

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason="headless Chromium not installed (Debian: apt-get install -y chromium)",
    ),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    return build_report(write_all(root / "out"), root / "report.html", static=True)


def test_every_plot_decodes_in_chromium(report: Path, tmp_path: Path) -> None:
    probed = tmp_path / "probed.html"
    probed.write_text(
        report.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"),
        encoding="utf-8",
    )
    run = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r'data-probe="(\d+)/(\d+)/(\d+)"', run.stdout)
    assert found, f"probe did not run: {run.stdout[:500]!r}"
    drawn, images, sections = map(int, found.groups())
    page = parse(report.read_text(encoding="utf-8"))
    assert images == len(page.plots) >= 10
    assert drawn == images, f"only {drawn} of {images} plots decoded"
    assert sections == len(page.sections)


def test_screenshot_shows_the_plots(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,4000", report.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.shape[:2] == (4000, 1400)
    # Plots put saturated colour on the page; its chrome is greys and white. Measured on this
    # report: 0.5% of pixels saturated and ~20,000 distinct colours with the plots, 0.007% and
    # ~1,800 (font anti-aliasing) with every <img> emptied.
    saturation = pixels.max(axis=-1) - pixels.min(axis=-1)
    coloured = float((saturation > 0.3).mean())
    assert coloured > 0.002, f"only {coloured:.3%} of the screenshot is coloured"
    colours = np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 5000
