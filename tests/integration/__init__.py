"""Integration tests: Ray, MLflow, subprocesses and whole sweeps (a larger time limit)."""
