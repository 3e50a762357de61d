"""The driver: the sweep file's schema and validation, stages, the search space, the offline pre-flight, the Tune wiring, the single-trial and models commands, the end-of-run summary."""
