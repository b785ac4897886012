"""Evaluation: the official DuReader-robust / CMRC 2018 F1/EM (``metric``), scoring windows and decoding
spans into answers (``inference``), one split scored (``split``, ``scoring``), no-answer thresholds
(``nulls``), confidence and abstention (``calibrate``, ``selective``, ``abstention``, ``confidence``), and the
``evaluate`` and ``predict`` commands.

May import ``mrc.data``, ``mrc.model`` and ``heads``; never the run (``mrc.train``).
"""
