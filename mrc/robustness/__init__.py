"""Robustness splits built from a source split: over-sensitivity (question rewrites: Cilin synonyms in
``thesaurus``, question templates in ``templates``, typing noise) and over-stability (distractor
sentences), plus ``python -m mrc.robustness build``.

May import ``mrc.data`` only.
"""
