"""The edge of lvmbench: CLI, sweep-file schema and validation, Ray Tune wiring, result sinks, report."""
