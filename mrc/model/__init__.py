"""The model: encoders by hub name, local build or from scratch (``encoder``), necks between encoder and
head (``necks``), the span model that puts a head on an encoder (``span_model``), the one place a model is
assembled from its parts (``build``: for a training run and for a checkpoint), what of the encoder trains
(``finetune``: full / frozen / adapters / LoRA), the distillation loss (``distill``), and saving / loading
checkpoints (``checkpoint``).

May import ``heads`` (the head contract) and ``mrc.data`` (the window geometry a checkpoint stores).
"""
