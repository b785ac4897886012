"""Ablation reports over run directories (``python -m mrc.report``): reading jobs (``jobs``), seed
statistics and tests (``stats``, ``significance``), plots (``plots``) and the markdown / CSV (``build``).

Reads files only: imports nothing from ``mrc`` outside ``mrc.report``.
"""
