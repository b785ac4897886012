"""The model: encoders by hub name, local build or from scratch (``encoder``), the span model that puts a
head on an encoder (``span_model``), and saving / loading checkpoints (``checkpoint``).

May import ``heads`` (the head contract); nothing else from ``mrc``.
"""
