"""Preemption-safe runs: a resumable training state in ``<run dir>/resume/state.pt``.

With ``trainer.resume_every=N`` (> 0) the state is written every N optimizer steps and after each
epoch's evaluation; with ``trainer.resume=auto`` a run whose run dir holds a state continues from it.
The state holds the model, optimizer and scheduler, the GradScaler's loss scale (fp16), the averaged weights
(``trainer.ema``), the RNG states of
every rank (Python, NumPy, torch CPU and CUDA), the position (epoch, batches of the epoch already consumed, optimizer step),
the epoch's loss accumulators and the run's bookkeeping (best F1 / epoch / results, history, timers).
The epoch's window sample and batch order are pure functions of the seed and the epoch, so they are
recomputed rather than stored. Its position and counters are range-checked (:data:`mrc.model.limits.RANGES`)
before the run resumes.

The file is a ``torch.save`` dict of tensors and plain Python values, loaded with ``weights_only=True`` (no
arbitrary pickle); the bookkeeping travels as JSON text. Writes are atomic (:func:`mrc.model.atomic.atomic_write`:
temp file in the same directory, fsync, ``os.replace``), so a kill leaves either the previous or the new state.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from mrc.model import atomic
from mrc.model.limits import out_of_range, unreadable_version
from mrc.train import distributed
from mrc.train.distributed import Dist
from mrc.train.loop import EpochProgress, n_epochs

log = logging.getLogger(__name__)
STATE = Path("resume") / "state.pt"
# The state's format (``version``). Version 1 recorded whatever options existed when it was written; the options
# added while it was current are filled by :func:`_from_v1`. Version 2 states record every option. Adding an
# option: bump VERSION and add one migration from the previous version that fills it with the value that
# reproduces the behaviour from before it existed (tests/train/test_resume_formats.py fails until you do).
VERSION = 2
# Keys that may change between the interrupted and the resuming invocation.
VOLATILE_KEYS = ("logger", "paths", "trainer.resume", "trainer.resume_every", "trainer.progress",
                 "trainer.num_workers",  # who collates the batches, not which: the same batches either way
                 "trainer.log_every", "trainer.device", "trainer.retain_freed_memory",
                 "trainer.trim_freed_memory",
                 "decode.abstention_pool")  # which scored splits are pooled for the abstention metrics
# Version 1: the options added while it was current, with the value that reproduces the behaviour from before
# they existed (a state without the key resumes when the run sets exactly that value).
V1_ADDED = {"optim.fused": False, "trainer.eval_each_epoch": True, "data.eval_splits": None,
              # issue 17: a state written before necks, fine-tuning modes, distillation and span targets
              # existed had none of them, which is what these defaults do
              "neck._target_": "mrc.model.necks.NoNeck", "finetune._target_": "mrc.model.finetune.Full",
              "distill.teacher": None, "distill.alpha": 0.5, "distill.temperature": 1.0,
              "head.span_target": "hard", "head.span_temperature": 1.0,
              "distill.cache": False, "distill.top_k": 64, "trainer.cpu_bf16": False,
              # f1_soft's smoothing (inert under the default hard target)
              "head.span_smoothing": 0.1,
              # finetune=frozen kept the encoder's dropout on before the option existed
              "finetune.encoder_dropout": True,
              # abstention: no calibration slice and no unanswerable training questions before they existed
              "data.calibration_share": 0.0, "data.negatives.share": 0.0,
              "data.negatives.kinds": ["other_paragraph", "answer_removed"], "data.negatives.seed": 0,
              "data.negatives.calibration": True,
              # trainer.cpu_bf16=true meant bf16 autocast before oneDNN's bf16 matrix products were an option
              "trainer.cpu_bf16_via": "autocast",
              # GPU readiness: CUDA precision from trainer.bf16 alone, no TF32 switch, no torch.compile
              "trainer.precision": "auto", "trainer.tf32": False, "trainer.compile": False,
              "trainer.compile_mode": "default",
              # every no-answer window was sampled at null_window_keep before negatives had their own share
              "trainer.negative_window_keep": None,
              # batches were always length-grouped (sorted within pools of 50 batches) before the switch existed
              "trainer.group_by_length": True,
              # the tuned null threshold maximised the tune_on split's F1 before it could aim at a stated cost
              "decode.tune_for": "f1", "decode.answerable_loss": 1.0,
              # issue 49's training recipes, each off before it existed
              "optim.layer_decay": 1.0, "trainer.ema": None, "trainer.rdrop": 0.0, "trainer.adversarial": "none",
              "trainer.adversarial_eps": 1.0, "trainer.adversarial_steps": 3,
              # the best epoch by data.in_domain F1 (or the last, eval_each_epoch=false) before select_on existed
              "trainer.select_on": None}
# ... and those whose value in an older state is that of another key of the same state
V1_ADDED_FROM = {"head.span_max_len": "decode.max_answer_len"}


def _from_v1(config: dict) -> dict:
    """Version 1 -> 2: every option added while version 1 was current, at its old behaviour's value."""
    filled = {k: v for k, v in V1_ADDED.items() if k not in config}
    filled.update({k: config.get(src) for k, src in V1_ADDED_FROM.items() if k not in config})
    return {**config, **filled}


MIGRATIONS: dict[int, Callable[[dict], dict]] = {1: _from_v1}  # version -> its config in the next version


class ResumeError(ValueError):
    """A resumable state that cannot be used (damaged, or from another configuration)."""

    user_facing = True


@dataclass
class RunProgress:
    """The run's bookkeeping across epochs (everything needed to finish and write metrics.json)."""

    step: int = 0
    best_f1: float = -1.0
    best_epoch: int | None = None
    best_results: dict | None = None
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    windows_trained: int = 0
    resumed: list[dict] = field(default_factory=list)
    selection_f1: dict[str, float] = field(default_factory=dict)  # trainer.select_on: epoch -> the slice's F1

    def to_json(self, keep_nbest: bool = True) -> str:
        """JSON text; ``keep_nbest=False`` drops the best epoch's n-best lists (not needed for outputs)."""
        data = asdict(self)
        if not keep_nbest and data["best_results"]:
            data["best_results"] = {n: {k: v for k, v in r.items() if k != "nbest"}
                                    for n, r in data["best_results"].items()}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "RunProgress":
        """Inverse of :meth:`to_json`."""
        return cls(**json.loads(text))


def state_path(run_dir: str | Path) -> Path:
    """Where a run dir keeps its resumable state."""
    return Path(run_dir) / STATE


def resume_mode(value: Any) -> str:
    """Normalise ``trainer.resume``: ``auto``, ``false`` (start over) or ``true`` (a state must exist)."""
    mode = str(value).strip().lower()
    if mode not in ("auto", "false", "true"):
        raise ResumeError(f"trainer.resume must be auto, false or true, got {value!r}")
    return mode


def find_state(run_dir: str | Path, mode: Any) -> Path | None:
    """The state to resume from under ``mode``, or None to start from scratch."""
    mode, path = resume_mode(mode), state_path(run_dir)
    if mode == "false":
        if path.is_file():
            log.warning("trainer.resume=false: ignoring %s (starting over; it will be overwritten)", path)
        return None
    if not path.is_file():
        if mode == "true":
            raise FileNotFoundError(f"trainer.resume=true but there is no {path}; run without it to start the run")
        return None
    return path


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temp file next to ``path``, fsync it, then atomically replace ``path``."""
    atomic.atomic_write(path, lambda f: torch.save(obj, f))


def remove_stale_temps(path: str | Path) -> list[Path]:
    """Delete temp files left next to ``path`` by a writer killed mid-write; return them."""
    stale = atomic.stale_temp_files(path)
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def load_state(path: str | Path) -> dict:
    """Read a state written by :class:`Resumer` (tensors on CPU; no arbitrary pickle)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holding objects weights_only refuses
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ResumeError(f"{path}: cannot be read as a resumable state ({first}); delete it or set "
                          "trainer.resume=false to start over") from None
    return state


def preflight(cfg: DictConfig, run_dir: str | Path, d: Dist) -> dict | None:
    """The state this run will resume from, loaded and checked against ``cfg``; None to start afresh.

    Called before the run writes anything into its run dir, so a refused resume leaves the finished
    run's record (``config.yaml``, ``.hydra/``, outputs) as it was."""
    if d.is_main:
        for p in remove_stale_temps(state_path(run_dir)):
            log.warning("removed %s (an interrupted write)", p)
    path = find_state(run_dir, cfg.trainer.get("resume", "auto"))
    if path is None:
        return None
    state = load_state(path)
    if not isinstance(state, dict) or not {"version", "world_size", "config"} <= set(state):
        raise ResumeError(f"{path}: not a resumable state of this project; delete it or set trainer.resume=false")
    check_compatible(state, cfg, d, path)
    check_position(state, n_epochs(cfg.trainer), path)
    return state


def check_position(state: dict, epochs: int, path: Path) -> None:
    """Refuse a state whose position or counters are outside :data:`mrc.model.limits.RANGES` (an ``epoch: -5``
    would train seven epochs) or cannot be read; ``epochs``: the run's epoch count."""
    hint = "delete it or set trainer.resume=false to start over"
    try:
        progress = asdict(EpochProgress(**json.loads(state["progress"])))  # the fields this code knows, no others
        run, rngs = asdict(RunProgress(**json.loads(state["run"]))), list(state["rng"])
    except (KeyError, TypeError, ValueError) as e:
        raise ResumeError(f"{path}: its progress cannot be read ({type(e).__name__}: {e}); {hint}") from None
    if len(rngs) != state["world_size"]:
        raise ResumeError(f"{path}: holds RNG states for {len(rngs)} process(es), written by {state['world_size']}; "
                          f"{hint}")
    values = {"epoch": (state.get("epoch"), epochs + 1)}
    values.update({k: (progress[k], None) for k in ("batch", "n_loss", "windows", "seconds", "total_loss")})
    values.update({k: (run[k], None) for k in ("step", "windows_trained", "train_seconds", "eval_seconds")})
    for key, (value, hi) in values.items():
        why = out_of_range(f"state.{key}", value, hi=hi)
        if why:
            given = f" (trainer.epochs={epochs})" if key == "epoch" else ""
            raise ResumeError(f"{path}: {key}={value!r} {why}{given}; the state is damaged or was edited, {hint}")


def rng_state() -> dict:
    """This process's RNG states: Python ``random``, NumPy's global generator, torch CPU and CUDA."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    """Restore states captured by :func:`rng_state`."""
    random.setstate((state["python"][0], tuple(state["python"][1]), state["python"][2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:
            log.warning("CUDA RNG states not restored: saved for %d devices, %d visible",
                        len(state["cuda"]), torch.cuda.device_count())


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def config_items(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as flat ``dotted.key -> value``, without :data:`VOLATILE_KEYS`."""
    flat = _flatten(OmegaConf.to_container(cfg, resolve=True))
    return {k: v for k, v in flat.items()
            if not any(k == vk or k.startswith(vk + ".") for vk in VOLATILE_KEYS)}


def migrated_config(state: dict, path: Path) -> tuple[dict, set[str]]:
    """(the state's recorded configuration brought to :data:`VERSION` by :data:`MIGRATIONS`, the keys the
    migrations filled); a version this code cannot read is refused."""
    version = state.get("version")
    why = unreadable_version(version, VERSION)
    if why:
        raise ResumeError(f"{path}: state version {version!r} ({why}); delete it or set trainer.resume=false")
    try:
        config = json.loads(state["config"])
    except (TypeError, ValueError) as e:
        raise ResumeError(f"{path}: its recorded configuration cannot be read ({e}); delete it or set "
                          "trainer.resume=false") from None
    if not isinstance(config, dict):
        raise ResumeError(f"{path}: its recorded configuration is not a mapping; delete it or set "
                          "trainer.resume=false")
    original = set(config)
    for v in range(version, VERSION):
        config = MIGRATIONS[v](config)
    return config, set(config) - original


def check_compatible(state: dict, cfg: DictConfig, d: Dist, path: Path) -> None:
    """Refuse to resume a state written by another configuration or another number of processes."""
    saved, filled = migrated_config(state, path)
    hint = "; start over with trainer.resume=false or use another hydra.run.dir"
    if state["world_size"] != d.world_size:
        raise ResumeError(f"{path} was written by {state['world_size']} process(es), this run has "
                         f"{d.world_size}{hint}")
    now = config_items(cfg)
    keys = (saved.keys() - (filled - now.keys())) | now.keys()  # a filled option this config lacks is not a change
    differ = sorted(k for k in keys if saved.get(k) != now.get(k))
    if differ:
        raise ResumeError(f"{path}: the configuration differs from the interrupted run's in {differ}{hint}")


class Resumer:
    """Saves and restores the resumable state of one run (a no-op saver when ``resume_every`` is 0).

    Under DDP every rank calls :meth:`save` at the same points (the RNG states are gathered, a
    collective); only rank 0 writes. Every rank reads the state on resume and takes its own RNG
    states; rank 0 carries the epoch's summed loss accumulators, the others restart theirs at zero.
    """

    def __init__(self, cfg: DictConfig, run_dir: str | Path, model: torch.nn.Module, opt, sched, d: Dist,
                 scaler: torch.amp.GradScaler | None = None, ema=None):
        self.cfg, self.model, self.opt, self.sched, self.d = cfg, model, opt, sched, d
        self.ema = ema  # trainer.ema: a mrc.train.recipes.WeightAverage, saved and restored with the model
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None  # fp16: its loss scale
        self.run_dir, self.path = Path(run_dir), state_path(run_dir)
        self.every = int(cfg.trainer.get("resume_every", 0) or 0)
        self.mode = resume_mode(cfg.trainer.get("resume", "auto"))
        self.keep_nbest = bool(cfg.decode.get("save_nbest", False))

    @property
    def enabled(self) -> bool:
        """Whether states are written."""
        return self.every > 0

    def restore(self, checked: dict | None = None) -> tuple[int, EpochProgress, RunProgress]:
        """(first epoch to run, its progress, run bookkeeping): from the state if resuming, else fresh.

        ``checked``: the state :func:`preflight` already loaded and checked (None: look for one here)."""
        state = checked if checked is not None else preflight(self.cfg, self.run_dir, self.d)
        if state is None:
            return 1, EpochProgress(), RunProgress()
        path = self.path
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        if self.ema is not None:
            if "ema" not in state:
                raise ResumeError(f"{path}: holds no averaged weights although trainer.ema is set; set "
                                  "trainer.resume=false to start over")
            self.ema.load_state_dict(state["ema"])
        if self.scaler is not None:
            if state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            else:  # a state written before the scaler's was saved: the scale starts over and finds its level again
                log.warning("%s holds no GradScaler state (written before it was saved): the fp16 loss scale "
                            "starts again from %g", path, self.scaler.get_scale())
        set_rng_state(state["rng"][self.d.rank])
        run = RunProgress.from_json(state["run"])
        progress = EpochProgress(**json.loads(state["progress"]))
        if not self.d.is_main:
            progress = EpochProgress(batch=progress.batch, seconds=progress.seconds)
        epoch = state["epoch"]
        run.resumed.append({"epoch": epoch, "batch": progress.batch, "step": run.step})
        if epoch > n_epochs(self.cfg.trainer):
            log.info("RESUMING from %s: every epoch is done (step %d); writing the outputs", path, run.step)
        else:
            log.info("RESUMING from %s: epoch %d after %d of its batches, optimizer step %d, best %s F1 %.2f "
                     "(epoch %s)", path, epoch, progress.batch, run.step,
                     self.cfg.trainer.get("select_on") or self.cfg.data.in_domain, run.best_f1,
                     run.best_epoch)
        return epoch, progress, run

    def save(self, run: RunProgress, epoch: int, progress: EpochProgress) -> None:
        """Write the state: ``epoch`` in progress with ``progress`` done (collective under DDP)."""
        rngs = distributed.gather(rng_state(), self.d)
        if not self.d.is_main:
            return
        state = {"version": VERSION, "world_size": self.d.world_size,
                 "config": json.dumps(config_items(self.cfg), ensure_ascii=False, sort_keys=True),
                 "epoch": epoch, "progress": json.dumps(asdict(progress)), "run": run.to_json(self.keep_nbest),
                 "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                 "scheduler": self.sched.state_dict(), "rng": rngs}
        if self.scaler is not None:  # fp16: the loss scale and its growth tracker (plain numbers)
            state["scaler"] = self.scaler.state_dict()
        if self.ema is not None:  # trainer.ema: the averaged weights and the update count
            state["ema"] = self.ema.state_dict()
        atomic_save(state, self.path)
        log.info("saved resumable state: epoch %d, %d batches done, optimizer step %d -> %s", epoch,
                 progress.batch, run.step, self.path)

    def step_saver(self, run: RunProgress, epoch: int) -> Callable[[int, EpochProgress], None] | None:
        """The mid-epoch callback for :meth:`mrc.train.loop.TrainLoop.run_epoch` (None when states are off)."""
        if not self.enabled:
            return None

        def save(step: int, progress: EpochProgress) -> None:
            run.step = step
            self.save(run, epoch, progress)

        return save

    def epoch_done(self, run: RunProgress, epoch: int) -> None:
        """After an epoch's evaluation: a state that starts the next epoch."""
        if self.enabled:
            self.save(run, epoch + 1, EpochProgress())
