"""Memory regions: null GPU fields on CPU (with a reason), region peaks that reset, and the
process-peak fallback where the reset is not allowed."""

from __future__ import annotations

from pathlib import Path

import pytest

from profilers.memory import track_memory


def test_cpu_run_gives_null_gpu_fields_with_a_reason() -> None:
    with track_memory("cpu") as m:
        pass
    for region, p in (("train", "mem/"), ("eval", "mem/eval_"), ("infer", "mem/infer_")):
        out = m.metrics(region)
        assert out[f"{p}gpu_peak_allocated_mb"] is None
        assert out[f"{p}gpu_peak_reserved_mb"] is None
        assert out[f"{p}cpu_peak_rss_mb"] > 0
        assert "cpu" in out["mem/null_reason"]


PER_REGION = """
import json, sys
from pathlib import Path
import numpy as np
from profilers import memory
from profilers.memory import track_memory
if len(sys.argv) > 1:
    # A /proc whose clear_refs cannot be written (a directory): the peak cannot be reset.
    memory._PROC = Path(sys.argv[1])
with track_memory("cpu") as big:
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
with track_memory("cpu") as small:
    pass
print(json.dumps({"scope": big.cpu_scope, "big": big.metrics(), "small": small.metrics(),
                  "small_infer": small.metrics("infer")}))
"""


def _two_regions(*args: str) -> dict:
    """A 64 MiB region then an empty one, in a fresh process; their metrics as JSON."""
    # A fresh process: in a long test session the allocator may serve the block from memory an
    # earlier test freed, and RSS would not move.
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PER_REGION, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _assert_documented_peaks(r: dict) -> None:
    big, small = r["big"], r["small"]
    b, s = big["mem/cpu_peak_rss_mb"], small["mem/cpu_peak_rss_mb"]
    assert big["mem/cpu_rss_scope"] == small["mem/cpu_rss_scope"] == r["scope"]
    assert r["scope"] in ("region", "process")
    assert b is not None and b > 64, b  # the 64 MiB block was resident during the big region
    assert s is not None and s > 0, s
    if r["scope"] == "region":
        # Each region's own peak: the empty region does not see the block.
        assert b - s > 50, (b, s)
    else:
        # No reset: each figure is the process's peak so far, which the block already raised.
        assert s >= b, (b, s)
        assert s == small["mem/cpu_process_peak_rss_mb"], small
    assert small["mem/cpu_process_peak_rss_mb"] >= b
    assert "mem/cpu_process_peak_rss_mb" not in r["small_infer"]
    assert r["small_infer"]["mem/cpu_rss_scope"] == r["scope"]


def test_cpu_peak_is_per_region_where_the_os_allows_a_reset() -> None:
    _assert_documented_peaks(_two_regions())


def test_without_clear_refs_the_figure_is_the_process_peak_so_far(tmp_path: Path) -> None:
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc (VmHWM)")
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "status").symlink_to("/proc/self/status")  # resolved by the reading process
    (proc / "clear_refs").mkdir()  # writing to it fails, as on a locked-down /proc
    r = _two_regions(str(proc))
    assert r["scope"] == "process"
    _assert_documented_peaks(r)


def test_unknown_region_is_an_error_that_names_the_choices() -> None:
    with track_memory("cpu") as m:
        pass
    with pytest.raises(ValueError, match="infer"):
        m.metrics("training")
