"""Masked-LM pretraining (``python -m mrc.pretrain``): the run (``train``), the corpus with the
evaluation-text filter (``corpus``, ``eval_text``, ``squad``), masking (``masking``), the MLM model
(``model``), held-out scores (``heldout``) and the vocabulary transplant (``transplant``).

May import ``mrc.data``, ``mrc.model`` and ``mrc.train`` (resume, loggers, the split registry).
"""
