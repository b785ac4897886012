"""Robustness splits built from a source split: over-sensitivity (question rewrites) and over-stability
(distractor sentences), plus ``python -m mrc.robustness build``.

May import ``mrc.data`` only.
"""
