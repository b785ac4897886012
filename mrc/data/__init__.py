"""Data: reading and validating SQuAD-format files (``squad``), the DuReader-robust download
(``download``), hash subsets (``subsets``), overlapping windows with offsets and the span mask
(``features``), padding batches (``batching``) and the synthetic demo set (``demo``, ``demo_relations``).

The lowest layer: imports nothing from ``mrc`` outside ``mrc.data`` and nothing from ``heads``.
"""
