"""Pruning: what may be pruned, the per-layer sensitivity scan, the pruning itself (masks or removal), and the figures of a pruned model."""
