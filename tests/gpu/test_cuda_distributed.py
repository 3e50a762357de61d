"""NCCL on one GPU: a world of one reduces on the device; two ranks on the same GPU take the
maximum of their memory figures (`profilers.memory.max_over_workers`) where NCCL allows two ranks
on one device (recent NCCL refuses, "Duplicate GPU detected": then that test is skipped with the
reason). Two GPUs under Ray: tests/integration/test_multiworker.py."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytestmark = pytest.mark.gpu


def test_nccl_world_of_one_reduces_on_the_gpu(tmp_path: Path) -> None:
    assert dist.is_nccl_available()
    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'init'}", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "nccl"
        t = torch.arange(4, dtype=torch.float32, device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        dist.broadcast(t, src=0)
        dist.barrier()
        assert t.is_cuda and t.tolist() == [0.0, 1.0, 2.0, 3.0]
        from profilers.memory import max_over_workers

        figures = {"mem/gpu_peak_allocated_mb": 12.5, "mem/cpu_peak_rss_mb": None}
        assert max_over_workers(figures, torch.device("cuda")) == figures
    finally:
        dist.destroy_process_group()


def _rank(rank: int, init: str, out: str) -> None:
    from profilers.memory import max_over_workers

    torch.cuda.set_device(0)
    try:
        dist.init_process_group(
            "nccl", init_method=init, rank=rank, world_size=2, timeout=timedelta(seconds=30)
        )
        t = torch.tensor([float(rank + 1)], device="cuda")
        dist.all_reduce(t)
        got = max_over_workers(
            {
                "mem/gpu_peak_allocated_mb": [100.0, 250.0][rank],
                "mem/cpu_peak_rss_mb": None,
                "mem/cpu_rss_scope": "region",
            },
            torch.device("cuda", 0),
        )
        Path(out, f"{rank}.json").write_text(json.dumps({"sum": t.item(), "max": got}))
        dist.destroy_process_group()
    except Exception as exc:  # NCCL's refusal is read by the parent
        Path(out, f"{rank}.err").write_text(f"{type(exc).__name__}: {exc}")


@pytest.mark.timeout(90)
def test_two_nccl_ranks_on_one_gpu_take_the_maximum(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_rank, args=(r, f"file://{tmp_path / 'init'}", str(tmp_path)))
        for r in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        if p.is_alive():
            p.kill()
    errors = sorted(tmp_path.glob("*.err"))
    if errors:
        text = " | ".join(e.read_text() for e in errors)
        if "Duplicate GPU" in text or "duplicate" in text.lower():
            pytest.skip(f"NCCL refuses two ranks on one GPU: {text[:300]}")
        pytest.fail(f"NCCL ranks failed: {text[:2000]}")
    missing = [r for r in range(2) if not (tmp_path / f"{r}.json").exists()]
    assert not missing, f"rank(s) {missing} wrote nothing (hung past 60 s or died)"
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    for r in results:
        assert r["sum"] == 3.0
        assert r["max"]["mem/gpu_peak_allocated_mb"] == 250.0
        assert r["max"]["mem/cpu_peak_rss_mb"] is None
