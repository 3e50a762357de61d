"""Driver-side Tune callback that logs to MLflow: a parent run per invocation, a child per trial.

Experiment = sweep name. The parent run holds the sweep file and sweep-level params; each child
run holds its trial's params (dotted keys), per-epoch metrics (step = epoch, one `log_batch` per
epoch, not one call per value), per-trial facts once (numbers as metrics at step 0, text as tags),
trial-end facts at the last epoch's step (new keys: no second point for an epoch metric), and the
trial's extra tables as CSV artifacts. Only the
driver talks to MLflow, so workers on a cluster need neither the store nor its credentials.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.driver.interrupts import stop_requested
from orchestrator.sinks.parquet_rows import BEST_OF, error_class
from orchestrator.sinks.rerun import config_yaml, rerun_command
from orchestrator.sinks.results import (
    LoggerCallback,
    error_text,
    split_result,
    start_columns,
    trial_params,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

DEFAULT_STORE_DIR = "mlruns"
MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
BATCH = 900  # MLflow accepts up to 1000 metrics per log_batch
# Tag that ties the runs of one invocation together across `--resume` (a new driver process).
INVOCATION_TAG = "lvmbench.invocation"
# Tag naming the Ray Tune experiment folder (`<sweep>-<YYYYmmdd-HHMMSS>`) a sweep's runs belong to.
TUNE_RUN_TAG = "lvmbench.tune_run"


def default_tracking_uri(base: Path | None = None) -> str:
    """MLFLOW_TRACKING_URI if set, else a SQLite store in ./mlruns (MLflow 3 refuses plain files)."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    store = (base or Path.cwd()) / DEFAULT_STORE_DIR
    return f"sqlite:///{store.resolve() / 'mlflow.db'}"


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside the default SQLite store, under mlruns/; other stores keep their own."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and tracking_uri.endswith(f"{DEFAULT_STORE_DIR}/mlflow.db"):
        return (Path(tracking_uri.removeprefix(prefix)).parent / "artifacts").as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=_artifact_location(tracking_uri, name))


def _artifact_location(tracking_uri: str, name: str) -> str | None:
    root = artifact_root_for(tracking_uri)
    return f"{root}/{name}" if root else None


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """An exclusive lock beside a local SQLite store (nothing for other stores)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        yield
        return
    db = Path(tracking_uri.removeprefix(prefix))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.lock"), "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def find_parent_run(tracking_uri: str, experiment: str, tune_run: str) -> str | None:
    """The parent run of the sweep that ran as Tune experiment `tune_run` (a restored sweep's
    sink is Tune's own unpickled copy: the driver finds its parent run by tag)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"tags.`lvmbench.role` = 'sweep' and tags.`{TUNE_RUN_TAG}` = '{tune_run}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None


def preload_mlflow() -> None:
    """Import MLflow's client and its SQL store on a thread of their own (no store is opened)."""

    def load() -> None:
        import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
        from mlflow import MlflowClient  # noqa: F401

    threading.Thread(target=load, name="lvmbench-mlflow-import", daemon=True).start()


def _ms() -> int:
    return int(time.time() * 1000)


class MlflowSink(LoggerCallback):
    """Parent/child runs on MlflowClient, tagged with an invocation id that survives `--resume`.

    Tune pickles its callbacks into the experiment directory, and `Tuner.restore` unpickles them:
    the pickled sink keeps its config and `invocation_id`, not the live client. A restored sink
    finds the parent and children of its invocation by tags and logs on into them; a metric
    already logged at a step (the epoch a killed driver or worker reported after its last
    checkpoint, the facts every new worker process sends again) is not logged twice.
    """

    def __init__(
        self,
        tracking_uri: str,
        sweep_name: str,
        sweep_file_text: str,
        sweep_params: dict[str, Any],
        tags: dict[str, str],
    ) -> None:
        self.tracking_uri = tracking_uri
        self.sweep_name = sweep_name
        self.sweep_file_text = sweep_file_text
        self.sweep_params = sweep_params
        self.tags = tags
        self.invocation_id = uuid.uuid4().hex
        self._reset()

    def _reset(self) -> None:
        self._client: MlflowClient | None = None
        self._parent_job: Future[str] | None = None
        self.parent_run_id: str | None = None
        self._experiment_id: str | None = None
        self._children: dict[str, str] = {}
        self._tables: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self._tag_values: dict[tuple[str, str], str] = {}
        self._last_step: dict[str, int] = {}
        # run id -> step -> metric keys already logged there.
        self._logged: dict[str, dict[int, set[str]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into its experiment state: keep the config and the invocation
        # id, not the live client; the runs are found again by tags.
        state = dict(self.__dict__)
        for key in (
            "_client",
            "_parent_job",
            "parent_run_id",
            "_experiment_id",
            "_children",
            "_tables",
            "_tag_values",
            "_last_step",
            "_logged",
        ):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("invocation_id", uuid.uuid4().hex)
        self._reset()

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            from mlflow import MlflowClient

            with store_lock(self.tracking_uri):
                # Opening a new SQLite store creates its tables; two sweeps starting at once on
                # one store must not both run that migration.
                client = MlflowClient(tracking_uri=self.tracking_uri)
                client.search_experiments(max_results=1)
            self._client = client
        return self._client

    def _find_runs(self, role: str) -> list[Any]:
        """This invocation's runs of `role` (sweep | trial), from an earlier driver of it."""
        query = (
            f"tags.`{INVOCATION_TAG}` = '{self.invocation_id}' and tags.`lvmbench.role` = '{role}'"
        )
        runs, token = [], None
        while True:
            page = self.client.search_runs(
                [self._experiment_id],  # type: ignore[list-item]
                filter_string=query,
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def start_in_background(self) -> None:
        """Open the store and start the parent run on a thread of its own while Tune starts the
        first worker (a second or more: a new SQLite store runs its migrations). `start_parent`
        waits for it, and raises what it raised."""
        if self._parent_job is None and self.parent_run_id is None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lvmbench-mlflow")
            self._parent_job = pool.submit(self._start_parent)
            pool.shutdown(wait=False)

    def start_parent(self) -> str:
        """Create the invocation's parent run, or find it again after `--resume` (idempotent)."""
        if self._parent_job is not None:
            job, self._parent_job = self._parent_job, None
            return job.result()
        return self._start_parent()

    def _start_parent(self) -> str:
        from mlflow.entities import Param

        if self.parent_run_id is None:
            self._experiment_id = get_or_create_experiment(
                self.client, self.sweep_name, self.tracking_uri
            )
            earlier = self._find_runs("sweep")
            if earlier:
                run = min(earlier, key=lambda r: r.info.start_time)
                self.parent_run_id = run.info.run_id
                self._reopen(run)
                for child in self._find_runs("trial"):
                    trial_id = child.data.tags.get("lvmbench.trial_id")
                    if trial_id:
                        self._children.setdefault(trial_id, child.info.run_id)
                return self.parent_run_id
            run = self.client.create_run(
                self._experiment_id,
                run_name=" ".join(
                    x
                    for x in (
                        self.sweep_name,
                        self.sweep_params.get("stage"),
                        time.strftime("%Y-%m-%d %H:%M:%S"),
                    )
                    if x
                ),
                tags={**self.tags, "lvmbench.role": "sweep", INVOCATION_TAG: self.invocation_id},
            )
            self.parent_run_id = run.info.run_id
            params = [Param(k, str(v)[:MAX_PARAM_LEN]) for k, v in self.sweep_params.items()]
            self.client.log_batch(self.parent_run_id, params=params)
            self.client.log_text(self.parent_run_id, self.sweep_file_text, "sweep.yaml")
        return self.parent_run_id

    def _reopen(self, run: Any) -> None:
        # A run ended by an earlier driver (an errored trial `--resume` runs again) runs again.
        if run.info.status != "RUNNING":
            self.client.update_run(run.info.run_id, status="RUNNING")

    def setup(self, **info: Any) -> None:
        self.start_in_background()

    def log_trial_start(self, trial: Any) -> None:
        from mlflow.entities import Param, RunTag

        parent = self.start_parent()
        if trial.trial_id in self._children:
            run_id = self._children[trial.trial_id]
            if run_id not in self._logged:
                # First sight of this child in this driver: an earlier one created it.
                self._load_logged(run_id)
                self._reopen(self.client.get_run(run_id))
            return
        params = trial_params(trial)
        run = self.client.create_run(
            self._experiment_id,  # type: ignore[arg-type]
            run_name=run_name(params, self.sweep_params.get("search")),
            tags={
                **self.tags,
                "mlflow.parentRunId": parent,
                "lvmbench.role": "trial",
                "lvmbench.trial_id": trial.trial_id,
                "lvmbench.trainable": str(params.get("trainable")),
                "lvmbench.stage": str(params.get("stage")),
                INVOCATION_TAG: self.invocation_id,
            },
        )
        self._children[trial.trial_id] = run.info.run_id
        self._logged[run.info.run_id] = {}
        entries = [
            Param(k, ("" if v is None else str(v))[:MAX_PARAM_LEN]) for k, v in params.items()
        ]
        for i in range(0, len(entries), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(run.info.run_id, params=entries[i : i + 100])
        # The record that reruns it: the resolved config and the command (orchestrator.sinks.rerun).
        self.client.log_text(run.info.run_id, config_yaml(trial.config), "config.yaml")
        output = self.sweep_params.get("output")
        if output:
            rerun = rerun_command(Path(str(output)), self.sweep_name, trial.trial_id)
            self.client.set_tag(run.info.run_id, "lvmbench.rerun", rerun)
        start = {k: v for k, v in start_columns(trial.config).items() if v is not None}
        if start:
            self.client.log_batch(
                run.info.run_id, tags=[RunTag(k, str(v)) for k, v in start.items()]
            )

    def _load_logged(self, run_id: str) -> None:
        """Which metric was logged at which step, and the tags, from the run's stored history."""
        run = self.client.get_run(run_id)
        logged: dict[int, set[str]] = {}
        for key in run.data.metrics:
            for point in self.client.get_metric_history(run_id, key):
                logged.setdefault(point.step, set()).add(key)
        self._logged[run_id] = logged
        epochs = [step for step, keys in logged.items() if "epoch" in keys]
        if epochs:
            self._last_step[run_id] = max(epochs)
        for key, value in run.data.tags.items():
            self._tag_values[(run_id, key)] = value

    def _run_id(self, trial: Any) -> str:
        if trial.trial_id not in self._children or self._children[trial.trial_id] not in (
            self._logged
        ):
            self.log_trial_start(trial)
        return self._children[trial.trial_id]

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        run_id = self._run_id(trial)
        got = split_result(result)
        if got.final:
            # Trial-end facts: keys of their own, at the last epoch's step.
            self._log(run_id, {**got.facts, **got.metrics}, self._last_step.get(run_id, 0))
        else:
            assert got.epoch is not None
            self._last_step[run_id] = max(got.epoch, self._last_step.get(run_id, 0))
            if got.facts:
                self._log(run_id, got.facts, 0)
            self._log(run_id, got.metrics, got.epoch)
        for name, rows in got.tables.items():
            self._tables.setdefault(trial.trial_id, {}).setdefault(name, []).extend(rows)

    def _log(self, run_id: str, values: dict[str, Any], step: int) -> None:
        """Numbers as metrics at `step` (one `log_batch` per 900), text as tags (changed ones).

        A metric already at `step` is skipped: a retried trial reports again the epochs after
        its last checkpoint, and MLflow would keep both points.
        """
        from mlflow.entities import Metric, RunTag

        now = _ms()
        done = self._logged.setdefault(run_id, {}).setdefault(step, set())
        batch = [
            Metric(k, float(v), now, step)
            for k, v in values.items()
            if isinstance(v, int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and k not in done
        ]
        done.update(m.key for m in batch)
        # MLflow metrics are numbers only: the environment, counters' names and the reasons for a
        # null become tags.
        tags = [
            RunTag(k, v[:5000])
            for k, v in values.items()
            if isinstance(v, str) and self._tag_values.get((run_id, k)) != v[:5000]
        ]
        for tag in tags:
            self._tag_values[(run_id, tag.key)] = tag.value
        for i in range(0, len(batch), BATCH):
            self.client.log_batch(run_id, metrics=batch[i : i + BATCH], tags=tags if i == 0 else ())
        if not batch and tags:
            self.client.log_batch(run_id, tags=tags)

    def _finish(self, trial: Any, status: str, error: str | None) -> None:
        from mlflow.entities import RunTag

        run_id = self._run_id(trial)
        for name, rows in self._tables.pop(trial.trial_id, {}).items():
            import pandas as pd

            self.client.log_text(run_id, pd.DataFrame(rows).to_csv(index=False), f"{name}.csv")
        if error:
            tags = [RunTag("lvmbench.error", error[:5000])]
            kind = error_class(error)
            if kind:
                tags.append(RunTag("lvmbench.error_type", kind))
            self.client.log_batch(run_id, tags=tags)
            self.client.log_text(run_id, error, "error.txt")
        else:
            # A retried trial (--retry-failed) that now finished: its old error is history
            # (error.txt stays), not its state.
            for key in ("lvmbench.error", "lvmbench.error_type"):
                if self._tag_values.pop((run_id, key), None) is not None:
                    self.client.delete_tag(run_id, key)
        self._log_best(run_id)
        self._tag_caveats(run_id)
        self.client.set_terminated(run_id, status=status)

    def _tag_caveats(self, run_id: str) -> None:
        """`lvmbench.caveats`: why this run's numbers mean less than they seem (chance accuracy,
        substituted weights, lock waits, noisy latency; `orchestrator.report.caveats`)."""
        import pandas as pd

        from orchestrator.report.caveats import trial_caveats

        data = self.client.get_run(run_id).data
        row = pd.Series({**data.params, **data.metrics}, dtype=object)
        row["smoke"] = data.params.get("smoke") == "True"
        caveats = trial_caveats(row)
        if caveats:
            text = "; ".join(f"{c.flag}: {c.text}" for c in caveats)
            self.client.set_tag(run_id, "lvmbench.caveats", text[:5000])

    def _log_best(self, run_id: str) -> None:
        """`best/*` as the trials table has them, from the run's own history (a resumed trial's
        earlier epochs included), at the last epoch's step."""
        best: dict[str, Any] = {}
        for metric, mode in BEST_OF.items():
            points = self.client.get_metric_history(run_id, metric)
            if not points:
                continue
            pick = max if mode == "max" else min
            top = pick(points, key=lambda p: p.value)
            best[f"best/{metric}"] = top.value
            if metric == "val/acc":
                best["best/epoch"] = top.step
        if best:
            self._log(run_id, best, self._last_step.get(run_id, 0))

    def _log_sweep_best(self) -> None:
        """The parent run gets the sweep's best values: each `best/*` over its trials."""
        from mlflow.entities import RunTag

        best: dict[str, tuple[float, str]] = {}
        for trial_id, run_id in self._children.items():
            metrics = self.client.get_run(run_id).data.metrics
            for metric, mode in BEST_OF.items():
                value = metrics.get(f"best/{metric}")
                if value is None:
                    continue
                have = best.get(metric)
                better = have is None or (value > have[0] if mode == "max" else value < have[0])
                if better:
                    best[metric] = (value, trial_id)
        if not best:
            return
        assert self.parent_run_id is not None
        self._log(self.parent_run_id, {f"best/{m}": v for m, (v, _) in best.items()}, 0)
        if "val/acc" in best:
            tag = RunTag("lvmbench.best_trial_id", best["val/acc"][1])
            self.client.log_batch(self.parent_run_id, tags=[tag])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        if failed:
            self._finish(trial, "FAILED", error_text(trial))
        elif stop_requested() is not None:
            # Tune ends the running trials of a stopped sweep as if they had finished.
            self._finish(trial, "KILLED", None)
        else:
            self._finish(trial, "FINISHED", None)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._parent_job is not None:
            self.start_parent()  # still being created (no trial started): wait, then end it
        if self.parent_run_id is None:
            return
        # Runs an earlier (killed) driver of this invocation left RUNNING end with their trial.
        status_of = {t.trial_id: t.status for t in trials}
        for trial_id, run_id in self._children.items():
            if self.client.get_run(run_id).info.status != "RUNNING":
                continue
            ended = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}
            if stop_requested() is not None:
                ended = {"ERROR": "FAILED"}
            self.client.set_terminated(run_id, status=ended.get(status_of.get(trial_id), "KILLED"))
        self._log_sweep_best()
        failed = any(t.status == "ERROR" for t in trials)
        # A trial still pending or running at the end: the sweep was stopped (Ctrl-C, SIGTERM).
        stopped = stop_requested() is not None or any(
            t.status not in ("TERMINATED", "ERROR") for t in trials
        )
        status = "KILLED" if stopped else "FAILED" if failed else "FINISHED"
        self.client.set_terminated(self.parent_run_id, status=status)


def run_name(params: dict[str, Any], searched: str | None) -> str:
    """A trial's MLflow run name: its model and searched values (`vit_tiny_patch16_224 rank=4`),
    so the runs of a sweep tell apart in the UI (the trial id is the `lvmbench.trial_id` tag)."""
    parts = [str(params.get("model.name"))]
    for key in [k.strip() for k in (searched or "").split(",")]:
        if not key or key in ("(none)", "model", "model.name"):
            continue
        value = params.get(key)
        if value is None:
            value = params.get(f"{key}.name")
        parts.append(f"{key.rsplit('.', 1)[-1]}={_short(value)}")
    return " ".join(parts)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def tag_runs(tracking_uri: str, run_ids: list[str | None], tags: dict[str, str]) -> None:
    """Set `tags` on finished runs (the parent runs get the report's path once it is written)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    for run_id in run_ids:
        if run_id:
            for key, value in tags.items():
                client.set_tag(run_id, key, value)
