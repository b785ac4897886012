"""Evaluation: the official DuReader-robust / CMRC 2018 F1/EM (``metric``), scoring windows and decoding
spans into answers (``inference``), no-answer thresholds (``nulls``), and the ``evaluate`` and
``predict`` commands.

May import ``mrc.data``, ``mrc.model`` and ``heads``; never the run (``mrc.train``).
"""
