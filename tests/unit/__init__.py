"""Unit tests: one module or function at a time, in this process, without Ray or MLflow."""
