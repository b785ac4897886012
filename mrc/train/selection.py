"""``trainer.select_on``: which epoch a run reports, chosen on data held out of training.

``null`` (the default) reports the last epoch (with ``trainer.eval_each_epoch=true`` every epoch is scored, for
the curves, but none is chosen on an eval split). ``calibration`` scores the slice ``data.calibration_share`` holds
out of the training files (the dev slice: the same questions that tune thresholds and calibrators) after every
epoch and reports the epoch with the best F1 there (ties: the earlier epoch); the eval splits never choose.
Its F1 is what :func:`mrc.train.pipeline.run` returns, so a sweeper (``hydra/sweeper=optuna``) optimises it.

With ``trainer.eval_each_epoch=true`` every split is scored every epoch and the chosen epoch's results and
checkpoint are kept as they are scored. With ``false`` only the slice is scored per epoch; the chosen epoch's
weights are kept in memory (a CPU copy of the state dict) and the eval splits are scored once, after the last
epoch, with those weights. When resumable states are written (``trainer.resume_every``) those weights are also
written, atomically, to ``<run dir>/resume/best-<epoch>.pt``: a resumed run reloads the chosen epoch's weights
instead of losing them. The file of a newly chosen epoch is written before the state that names it, and the
older one is deleted only after that state, so a kill at any point leaves the weights every state names.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from omegaconf import DictConfig

from mrc.model import atomic
from mrc.train.inputs import CALIBRATION, ConfigError, calibration_share
from mrc.train.resume import ResumeError

log = logging.getLogger(__name__)
CHOICES = (None, CALIBRATION)
OPTUNA_SWEEPER = "OptunaSweeper"  # hydra-optuna-sweeper's class: it optimises what run.py returns
_BEST = re.compile(r"best-(\d+)\.pt")


def select_on(cfg: DictConfig) -> str | None:
    """``trainer.select_on`` checked before anything runs: null, or ``calibration`` with a slice to score."""
    value = cfg.trainer.get("select_on")
    if value not in CHOICES:
        raise ConfigError(f"trainer.select_on={value!r}: must be null (report the last epoch) or calibration (the slice "
                          "data.calibration_share holds out of training); an eval split would pick the epoch on the "
                          "data it then reports")
    if value == CALIBRATION and not calibration_share(cfg):
        raise ConfigError("trainer.select_on=calibration scores the slice held out of training, but "
                          "data.calibration_share=0 holds nothing out; set data.calibration_share (e.g. 0.1)")
    return value


def check_loaded(cfg: DictConfig, splits: dict) -> None:
    """After the data is read: the slice ``trainer.select_on`` names exists (a tiny share may hold nothing)."""
    on = select_on(cfg)
    if on is not None and on not in splits:
        raise ConfigError(f"trainer.select_on={on}: no {on} split was built (data.calibration_share="
                          f"{cfg.data.calibration_share} held out no question); raise the share")


def check_sweeper(sweeper_target: str | None, cfg: DictConfig) -> None:
    """Refuse an Optuna search whose objective would be an eval split's F1 (``trainer.select_on`` unset)."""
    if sweeper_target and sweeper_target.rsplit(".", 1)[-1] == OPTUNA_SWEEPER and select_on(cfg) != CALIBRATION:
        raise ConfigError("hydra/sweeper=optuna optimises the F1 run.py returns, which is data.in_domain's unless "
                          "trainer.select_on=calibration; set trainer.select_on=calibration and "
                          "data.calibration_share (conf/experiment/search_demo.yaml)")


def selection_split(cfg: DictConfig) -> str:
    """The split whose F1 picks the reported epoch."""
    return cfg.trainer.get("select_on") or cfg.data.in_domain


def best_path(run_dir: str | Path, epoch: int) -> Path:
    """Where a resumable run keeps the weights of its chosen epoch."""
    return Path(run_dir) / "resume" / f"best-{epoch}.pt"


def _best_files(run_dir: str | Path) -> dict[int, Path]:
    folder = Path(run_dir) / "resume"
    found = {}
    if folder.is_dir():
        for p in folder.iterdir():
            m = _BEST.fullmatch(p.name)
            if m:
                found[int(m.group(1))] = p
    return found


class BestWeights:
    """The chosen epoch's weights in memory (rank 0 only), and on disk when ``persist`` (resumable runs)."""

    def __init__(self, run_dir: str | Path, persist: bool):
        self.run_dir, self.persist = Path(run_dir), persist
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None
        folder = self.run_dir / "resume"
        if persist and folder.is_dir():  # persist: rank 0 only, the one writer
            for tmp in folder.glob(".best-*.pt.*.tmp"):  # a writer killed mid-write
                tmp.unlink(missing_ok=True)

    def keep(self, model: torch.nn.Module, epoch: int) -> None:
        """Copy ``model``'s weights as epoch ``epoch``'s (and write them, when persisting)."""
        self.epoch = epoch
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        if self.persist:
            atomic.atomic_write(best_path(self.run_dir, epoch),
                                lambda f: torch.save({"epoch": epoch, "model": self.state}, f))

    def restore(self, epoch: int | None) -> None:
        """On resume: read back the weights of the chosen epoch ``epoch`` that a state names."""
        if epoch is None:
            return
        path = best_path(self.run_dir, epoch)
        hint = "delete <run dir>/resume or set trainer.resume=false to start over"
        if not path.is_file():
            raise ResumeError(f"{path}: missing; the resumable state chose epoch {epoch} (trainer.select_on) and its "
                              f"weights are needed; {hint}")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            assert isinstance(saved, dict) and saved.get("epoch") == epoch and isinstance(saved.get("model"), dict)
        except Exception as e:  # noqa: BLE001 - truncated, not a torch file, another epoch's
            raise ResumeError(f"{path}: not the weights of epoch {epoch} ({type(e).__name__}); {hint}") from None
        self.epoch, self.state = epoch, saved["model"]
        log.info("resumed the weights of the chosen epoch %d from %s", epoch, path)

    def load_into(self, model: torch.nn.Module) -> None:
        """Put the kept weights back into ``model`` (for the final evaluation and the checkpoint)."""
        if self.state is None:
            raise RuntimeError("no epoch's weights were kept")
        model.load_state_dict(self.state)

    def prune(self, keep: int | None) -> None:
        """Delete written weights of any epoch but ``keep`` (after a state naming ``keep`` was written; a fresh
        run, ``keep=None``, deletes those of an earlier run in the same run dir)."""
        if not self.persist:
            return
        for epoch, path in _best_files(self.run_dir).items():
            if epoch != keep:
                path.unlink(missing_ok=True)
