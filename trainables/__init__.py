"""The work of one trial: models, data, the epoch loop, and one module per trainable.

Every trainable is `run(config: dict, reporter: Reporter) -> None`, registered by name in
`trainables.registry`. Nothing here imports Ray or MLflow: a trial runs the same under Ray Tune
(`orchestrator.workers.trial_runner`) and in a plain process (tests, notebooks, `ListReporter`).
"""
