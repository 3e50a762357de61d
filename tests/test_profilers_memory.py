"""Memory regions: null GPU fields on CPU (with a reason), region peaks that reset."""

from __future__ import annotations

import pytest
import torch

from profilers.memory import track_memory

GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


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
import json, numpy as np
from profilers.memory import track_memory
with track_memory("cpu") as big:
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    del block
with track_memory("cpu") as small:
    pass
print(json.dumps({"scope": big.cpu_scope, "big": big.metrics(), "small": small.metrics(),
                  "small_infer": small.metrics("infer")}))
"""


def test_cpu_peak_is_per_region() -> None:
    # A fresh process: in a long test session the allocator may serve the block from memory an
    # earlier test freed, and RSS would not move.
    import json
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", PER_REGION], capture_output=True, text=True, check=True, timeout=120
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    b, s = r["big"]["mem/cpu_peak_rss_mb"], r["small"]["mem/cpu_peak_rss_mb"]
    if r["scope"] == "region":
        assert b - s > 50, (b, s)
    assert r["small"]["mem/cpu_process_peak_rss_mb"] >= b
    assert "mem/cpu_process_peak_rss_mb" not in r["small_infer"]


def test_unknown_region_is_an_error_that_names_the_choices() -> None:
    with track_memory("cpu") as m:
        pass
    with pytest.raises(ValueError, match="infer"):
        m.metrics("training")


@GPU
@pytest.mark.gpu
def test_gpu_peaks_are_numbers_and_reset() -> None:
    with track_memory("cuda") as big:
        x = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
        del x
    with track_memory("cuda") as small:
        y = torch.empty(2**20, dtype=torch.uint8, device="cuda")
        del y
    b, s = big.metrics("train"), small.metrics("eval")
    assert b["mem/gpu_peak_allocated_mb"] >= 256
    assert s["mem/eval_gpu_peak_allocated_mb"] < 16
    assert b["mem/gpu_peak_reserved_mb"] >= b["mem/gpu_peak_allocated_mb"]
    assert "mem/null_reason" not in b
