"""What one training run shares, built once by :func:`mrc.train.pipeline.run` and handed to every step:
:class:`Run` (config, run dir, processes, device and precision, logger, tokenizer, evaluation splits, progress)
and :class:`TrainingSet` (the training questions and their windows)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mrc.data.features import Window
from mrc.data.squad import Example
from mrc.eval.split import Split
from mrc.train.distributed import Dist
from mrc.train.loggers import NullLogger
from mrc.train.precision import FP32, Precision
from mrc.train.resume import RunProgress


@dataclass
class TrainingSet:
    """The training questions, their windows, and what ``metrics.json`` says of the data (``info``: counts per
    source, features, the data root)."""

    examples: list[Example]
    windows: list[Window]
    info: dict = field(default_factory=dict)


@dataclass
class Run:
    """One training run. ``params``: the model's facts for ``metrics.json`` (parameter counts, precision, attention,
    CPU, recipes); ``state``: the bookkeeping across epochs (restored on resume)."""

    cfg: DictConfig
    dir: Path
    dist: Dist = field(default_factory=Dist)
    device: str = "cpu"
    precision: Precision = FP32
    tokenizer: Any = None
    splits: dict[str, Split] = field(default_factory=dict)
    logger: Any = field(default_factory=NullLogger)
    job: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    state: RunProgress = field(default_factory=RunProgress)

    @property
    def amp(self):
        """The autocast dtype of the forward passes (None: no autocast)."""
        return self.precision.autocast_dtype

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that scores, saves and writes outputs."""
        return self.dist.is_main
