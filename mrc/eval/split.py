"""An evaluation split as the scorer sees it: its questions, their windows and the official gold answers.

Which splits a run has and how each is built (files, robustness builders) is the training run's business
(:mod:`mrc.train.splits`); scoring one needs only this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mrc.data.features import Window
from mrc.data.squad import Example
from mrc.eval.metric import GoldQuestion


@dataclass
class Split:
    """An evaluation split: its examples, windows and the official gold answers."""

    name: str
    path: Path
    examples: list[Example]
    gold: list[GoldQuestion]
    stats: dict
    spec: dict = field(default_factory=dict)
    windows: list[Window] = field(default_factory=list)
