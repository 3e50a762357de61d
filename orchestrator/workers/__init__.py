"""What runs inside the Ray workers: the function Tune calls per trial and the Ray Train driver for multi-worker trials."""
