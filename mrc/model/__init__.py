"""The model: encoders by hub name, local build or from scratch (``encoder``), necks between encoder and
head (``necks``), the span model that puts a head on an encoder (``span_model``), what of the encoder trains
(``finetune``: full / frozen / adapters / LoRA), the distillation loss (``distill``), and saving / loading
checkpoints (``checkpoint``).

May import ``heads`` (the head contract); nothing else from ``mrc``.
"""
