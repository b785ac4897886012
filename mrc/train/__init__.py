"""The fine-tuning run: ``pipeline`` (what ``run.py`` calls: data, model, epochs, evaluation, outputs),
the training ``loop``, ``resume``, ``distributed`` (DDP), ``loggers`` (W&B or none), the evaluation
split registry (``splits``), what a run writes (``outputs``), the lexical baseline run (``lexical``) and
the CPU allocator setting (``cpu_memory``).

May import ``mrc.data``, ``mrc.robustness``, ``mrc.model``, ``mrc.eval`` and ``heads``.
"""
