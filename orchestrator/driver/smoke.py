"""`--smoke`: the one config transform that shrinks a sweep until it proves it runs, in minutes, on a CPU.

Everything a smoke run does differently is expressed here, in config keys: the trainables never
read `smoke` (it stays set on the config only as a record, so rows and MLflow tags show it). The
model, the search and the stages stay; the stage plan applies the transform again to each stage
after merging the stage's own keys, so a stage's epochs or batches cannot escape it.
"""

from __future__ import annotations

from orchestrator.driver.schema import SweepConfig

SMOKE_BATCH_SIZE = 4
SMOKE_TRAIN_BATCHES = 3
SMOKE_VAL_BATCHES = 2
SMOKE_SUBSET = 128
# Latency: one warm-up, the fewest repeats the profiler accepts, at most 2 s per point.
SMOKE_LATENCY_WARMUP = 1
SMOKE_LATENCY_REPEATS = 3
SMOKE_LATENCY_POINT_S = 2.0
# Pruning sensitivity: layers x ratios evaluations; two ratios on a few images prove the path.
SMOKE_SENSITIVITY_SAMPLES = 32
# Bench: timed training steps per point (the fewest the bench accepts).
SMOKE_BENCH_STEPS = 3


def apply_smoke(sweep: SweepConfig) -> SweepConfig:
    """A copy of `sweep` shrunk for --smoke; applying it twice changes nothing more.

    One epoch of at most 3 batches of at most 4 images on a 128-image subset; latency at one point
    (the smallest batch, the first input size); FLOPs at the first input size; pruning scans the
    smallest and largest ratio on 32 images and recovers for at most one epoch; the bench times
    the smallest batch at the first precision, one warm-up and 3 timed steps. A ViT-B at 224
    must get through in minutes on 2 CPU cores.
    """
    out = sweep.model_copy(deep=True)
    out.smoke = True
    optim = out.optim
    optim.epochs = 1
    optim.batch_size = min(optim.batch_size, SMOKE_BATCH_SIZE)
    optim.max_train_batches = min(
        optim.max_train_batches or SMOKE_TRAIN_BATCHES, SMOKE_TRAIN_BATCHES
    )
    optim.max_val_batches = min(optim.max_val_batches or SMOKE_VAL_BATCHES, SMOKE_VAL_BATCHES)
    out.dataset.subset = min(out.dataset.subset or SMOKE_SUBSET, SMOKE_SUBSET)

    latency = out.profilers.latency
    if latency is not None:
        latency.warmup = min(latency.warmup, SMOKE_LATENCY_WARMUP)
        latency.repeats = min(latency.repeats, SMOKE_LATENCY_REPEATS)
        latency.max_point_s = min(
            latency.max_point_s or SMOKE_LATENCY_POINT_S, SMOKE_LATENCY_POINT_S
        )
        latency.batch_sizes = [min(latency.batch_sizes)]
        if latency.input_sizes:
            latency.input_sizes = latency.input_sizes[:1]
    flops = out.profilers.flops
    if flops is not None and flops.input_sizes:
        flops.input_sizes = flops.input_sizes[:1]

    prune = out.prune
    prune.sensitivity_ratios = sorted(
        {min(prune.sensitivity_ratios), max(prune.sensitivity_ratios)}
    )
    prune.sensitivity_samples = min(
        prune.sensitivity_samples or SMOKE_SENSITIVITY_SAMPLES, SMOKE_SENSITIVITY_SAMPLES
    )
    # The samples cap the scan; a batch cap written for the full study must not cut it further.
    prune.sensitivity_max_batches = None
    prune.recover_epochs = min(prune.recover_epochs, optim.epochs)

    # Bench: the smallest batch, the first precision, one warm-up step and the fewest timed ones.
    bench = out.bench
    sizes = bench.batch_sizes or (latency.batch_sizes if latency is not None else [1])
    bench.batch_sizes = [min(sizes)]
    if bench.precisions:
        bench.precisions = bench.precisions[:1]
    bench.warmup = min(bench.warmup, SMOKE_LATENCY_WARMUP)
    bench.steps = min(bench.steps, SMOKE_BENCH_STEPS)
    bench.max_point_s = min(bench.max_point_s or SMOKE_LATENCY_POINT_S, SMOKE_LATENCY_POINT_S)
    return out
