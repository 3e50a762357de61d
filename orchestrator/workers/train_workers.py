"""What the Tuner runs for a trial, and multi-worker trials: a Tune trial driving a TorchTrainer.

`trial_trainable(resources, max_failures)` is the Tuner's trainable with the resources a trial
asks for: `orchestrator.workers.trial_runner.run_trial` for one worker; for `resources.workers > 1`, the
driver below. `trial_demand(resources)` is what one trial takes from the cluster in all.

Ray Train V2 (Ray 2.60) does not run inside a Tune trial's own process group; Ray's Train + Tune
guide makes the Tune trial a small driver function that builds a `TorchTrainer` and passes the
workers' reports to Tune through `ray.tune.integration.ray_train.TuneReportCallback`. Here:

- the driver asks Tune for `DRIVER_CPU` (Ray refuses a trial that asks for nothing); the
  TorchTrainer's `ScalingConfig` asks for the workers;
- Ray Train starts the workers and their process group (gloo on CPU, NCCL on GPU) and sets
  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT and ACCELERATE_TORCH_DEVICE; Accelerate's
  PartialState finds the group already initialized and uses it, so every worker runs the SAME
  trainable and fit loop as a one-worker trial, under DDP, each on its shard of the data;
- every worker calls `ray.train.report` once per report (Train V2 makes it a barrier); only
  rank 0 sends the metrics, facts, tables and checkpoint, and the callback forwards rank 0's
  report only, so no row is doubled;
- the Train run lives in the Tune trial's own folder (`<trial>/ray_train`): a worker that dies
  restarts from the last checkpoint (`ray.train.get_checkpoint()`, up to `max_failures` times),
  and a Tune trial restarted by `--resume` or a retry finds the same run and its checkpoints.

Tune itself keeps no checkpoint of such a trial (the callback hands it only the path, in the
`checkpoint_path` key): a later stage's `from:` cannot start from a multi-worker stage.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from trainables.loop.reporting import Reporter

if TYPE_CHECKING:
    from orchestrator.driver.schema import ResourcesConfig

# CPU the Tune trial's driver asks for: the workers carry the load.
DRIVER_CPU = 0.01
# The Ray Train run's folder inside the Tune trial's folder.
TRAIN_RUN_NAME = "ray_train"


class TrainReporter(Reporter):
    """`trainables.loop.reporting.Reporter` inside a Ray Train worker: rank 0 speaks for the trial."""

    def __init__(self) -> None:
        import ray.train

        from orchestrator.workers.trial_runner import where_it_runs

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        # Where the trial ran and how wide: sent once, by rank 0, with its first report.
        super().__init__(where_it_runs(self.world_size) if self.rank == 0 else None)
        self._restored: tempfile.TemporaryDirectory[str] | None = None

    def emit(self, result: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        if self.rank != 0:
            # The barrier only: rank 0's report is the one Tune sees.
            ray.train.report({})
            return
        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(result, checkpoint=checkpoint)

    def resume_checkpoint(self) -> str | None:
        import ray.train

        from orchestrator.workers.trial_runner import local_copy

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return None
        # Every worker restores the same state, each from its own local copy.
        self._restored, path = local_copy(checkpoint)
        return path


def worker_loop(loop_config: dict[str, Any]) -> None:
    """What each Ray Train worker runs: the trial's trainable, as in a one-worker trial."""
    import torch

    from trainables.registry import trainable

    config = loop_config["trial"]
    # One thread per granted core (at least one): workers sharing a node must not oversubscribe.
    torch.set_num_threads(max(1, int(loop_config["cpu_per_worker"])))
    trainable(config["trainable"])(config, TrainReporter())


def multi_worker_trial(
    *, workers: int, cpu_per_worker: float, gpu_per_worker: float, max_failures: int = 0
) -> Callable[[dict[str, Any]], None]:
    """The Tune function trainable of a multi-worker trial (see the module docstring)."""

    def run_multi_worker_trial(config: dict[str, Any]) -> None:
        import ray.train
        from ray import tune
        from ray.train.torch import TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        storage = tune.get_context().get_storage()
        ck = config.get("checkpoint") or {}
        per_worker = {"CPU": cpu_per_worker}
        if gpu_per_worker:
            per_worker["GPU"] = gpu_per_worker
        trainer = TorchTrainer(
            worker_loop,
            train_loop_config={"trial": config, "cpu_per_worker": cpu_per_worker},
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers,
                use_gpu=gpu_per_worker > 0,
                resources_per_worker=per_worker,
            ),
            run_config=ray.train.RunConfig(
                name=TRAIN_RUN_NAME,
                storage_path=storage.trial_fs_path,
                storage_filesystem=storage.storage_filesystem,
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
                checkpoint_config=ray.train.CheckpointConfig(
                    num_to_keep=ck.get("num_to_keep", 1),
                    checkpoint_score_attribute=(
                        ck.get("metric", "val/acc") if ck.get("keep", "best") == "best" else None
                    ),
                    checkpoint_score_order=ck.get("mode", "max"),
                ),
                callbacks=[TuneReportCallback()],
            ),
        )
        trainer.fit()

    return run_multi_worker_trial


def trial_trainable(resources: ResourcesConfig, *, max_failures: int = 0) -> Any:
    """What the Tuner runs, with the resources each trial asks Ray for.

    One worker: `run_trial` asking for `cpu` / `gpu`. Several: a driver asking for a sliver of
    CPU (Ray refuses a trial that asks for nothing) that starts a TorchTrainer whose workers ask
    for `cpu_per_worker` / `gpu_per_worker` each; Ray Train restarts failed workers from the
    last checkpoint up to `max_failures` times.
    """
    from ray import tune

    from orchestrator.workers.trial_runner import run_trial

    if resources.workers == 1:
        return tune.with_resources(run_trial, {"cpu": resources.cpu, "gpu": resources.gpu})
    fn = multi_worker_trial(
        workers=resources.workers,
        cpu_per_worker=resources.worker_cpu,
        gpu_per_worker=resources.worker_gpu,
        max_failures=max_failures,
    )
    return tune.with_resources(fn, {"cpu": DRIVER_CPU})


def trial_demand(resources: ResourcesConfig) -> dict[str, float]:
    """What one trial takes from the cluster in all: {"CPU": ..., "GPU": ...}."""
    if resources.workers == 1:
        return {"CPU": resources.cpu, "GPU": resources.gpu}
    return {
        "CPU": DRIVER_CPU + resources.workers * resources.worker_cpu,
        "GPU": resources.workers * resources.worker_gpu,
    }
