"""GPU tests: every CUDA path (marked gpu; skipped without a CUDA device)."""
