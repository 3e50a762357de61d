"""The profilers inside a trial: the `train` trainable, run without Ray, reports them all."""

from __future__ import annotations

import io
import pickle
from typing import Any

import pytest

from profilers.metric_registry import metric_type
from trainables.loop.reporting import ListReporter
from trainables.train import run


@pytest.fixture(autouse=True)
def _lock_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LVMBENCH_LOCK_DIR", str(tmp_path / "locks"))


class PickledReporter(ListReporter):
    """Also keeps each result pickled, as Tune sends it to the driver."""

    def __init__(self) -> None:
        super().__init__()
        self.pickled: list[bytes] = []

    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.pickled.append(pickle.dumps(result))
        super().emit(result, checkpoint_dir)


def modules_to_unpickle(data: bytes) -> set[str]:
    found: set[str] = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            found.add(module)
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    return found


def test_train_trial_reports_static_and_per_epoch_profiles() -> None:
    reporter = PickledReporter()
    run(
        {
            "model": {
                "name": "vit_tiny_patch16_224",
                "img_size": 16,
                "kwargs": {"patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2},
            },
            "dataset": {"name": "digits", "subset": 64},
            "optim": {"batch_size": 16, "epochs": 2, "max_train_batches": 2, "max_val_batches": 1},
            "precision": "fp32",
            "checkpoint": {"enabled": False},
            "profilers": {
                "latency": {
                    "input_sizes": [16, 32],
                    "batch_sizes": [1, 2],
                    "repeats": 3,
                    "warmup": 0,
                },
                "time": {"peak_tflops": 0.1},
            },
        },
        reporter,
    )
    assert len(reporter.reports) == 2
    facts = reporter.facts
    assert facts["params/total"] == facts["params/trainable"] > 0
    assert facts["flops/fwd_gflops"] / facts["flops/fwd_gmacs"] == pytest.approx(2, abs=0.1)
    assert facts["env/torch_version"] and facts["env/fused_attn"] == "1/1"
    assert facts["data/train_samples"] == 64 and facts["data/mean"]
    for r in reporter.reports:
        # Per-trial facts are not repeated on the epoch reports (the memory profiler's scope and
        # null reason describe each region it measures, static or per epoch).
        repeated = [
            k for k in r if k in facts and k not in ("mem/cpu_rss_scope", "mem/null_reason")
        ]
        assert not repeated, repeated
        assert r["time/step_ms_p50"] > 0 and 0 < r["time/mfu"] < 1
        assert r["mem/cpu_peak_rss_mb"] > 0 and r["mem/eval_cpu_peak_rss_mb"] > 0
        assert r["mem/gpu_peak_allocated_mb"] is None and r["mem/eval_gpu_peak_reserved_mb"] is None
    for r in [*reporter.reports, facts]:
        profiler_keys = [k for k in r if k.split("/")[0] in ("mem", "time", "flops", "env")]
        assert all(metric_type(k) for k in profiler_keys), [
            k for k in profiler_keys if not metric_type(k)
        ]
    # The driver unpickles every result: a torch object in one (torch's TorchVersion string was
    # one) makes it import torch, ~1.5 s on the way to the sweep's first row.
    needs = set().union(*map(modules_to_unpickle, reporter.pickled))
    assert not {m for m in needs if m.split(".")[0] in ("torch", "timm", "trainables")}, needs
    lat = reporter.tables["latency"]
    assert len(lat) == 4 and all(r["latency_ms_p99"] >= r["latency_ms_p50"] for r in lat)
    assert len(reporter.tables["flops"]) == 1
