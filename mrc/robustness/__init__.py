"""Robustness splits built from a source split (over-sensitivity, over-stability)."""
