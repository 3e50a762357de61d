"""NVML's total-energy counter on a CUDA device: joules that grow while the GPU works."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


@pytest.mark.gpu
def test_nvml_counts_joules_of_gpu_work() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from profilers.energy import meter_for

    meter = meter_for(torch.device("cuda", 0))
    assert meter.counters, meter.why_null()
    assert meter.source == "nvml:0"
    x = torch.randn(4096, 4096, device="cuda")
    before = meter.reading()
    for _ in range(200):
        x = x @ x
        x = x / x.norm()
    torch.cuda.synchronize()
    joules = meter.joules_since(before)
    assert joules is not None and joules > 0.0
