"""The fine-tuning run: ``pipeline`` (what ``run.py`` calls: data, model, epochs, evaluation, outputs) over one
``context`` (the :class:`~mrc.train.context.Run` every step takes), the training ``loop``, the recipes
(``recipes``), evaluation and the choice of epoch inside a run (``evaluation``, ``selection``), ``metrics.json``
(``report``), ``precision``, ``resume``, ``distributed`` (DDP), ``loggers`` (W&B or none), the evaluation
split registry (``splits``), what a run writes (``outputs``), the lexical baseline run (``lexical``) and
the CPU allocator setting (``cpu_memory``).

May import ``mrc.data``, ``mrc.robustness``, ``mrc.model``, ``mrc.eval`` and ``heads``.
"""
