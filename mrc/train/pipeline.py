"""One run: data -> windows -> encoder + head -> train with per-epoch evaluation -> outputs.

:func:`run` is the page that says what a run is: it builds one :class:`~mrc.train.context.Run` (config, run dir,
processes, device, precision, tokenizer, splits, logger) and one :class:`~mrc.train.context.TrainingSet`, the model
through :func:`mrc.model.build.span_model`, then :func:`fit` trains, evaluates (:mod:`mrc.train.evaluation`) and
reports (:mod:`mrc.train.report`).
"""
from __future__ import annotations

import hashlib
import logging
import random
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mrc.data.features import Geometry, Window, build_windows
from mrc.model.build import span_model
from mrc.model.cpu import cpu_name, matmul_precision_scope, set_bf16_matmuls
from mrc.model.encoder import attention_implementation
from mrc.model.finetune import count_parameters
from mrc.model.span_model import max_positions
from mrc.train import distributed
from mrc.train.context import Run, TrainingSet
from mrc.train.cpu_memory import retain_freed_memory
from mrc.train.distributed import Dist
from mrc.train.evaluation import evaluate_epoch, final_evaluation
from mrc.train.inputs import ConfigError, load_data
from mrc.train.loggers import NullLogger, job_info
from mrc.train.loop import TrainLoop, build_optimizer, n_epochs, num_workers, total_steps, window_keeps
from mrc.train.precision import choose_precision, grad_scaler, maybe_compile, tf32_scope
from mrc.train.recipes import Recipes
from mrc.train.recipes import check as check_recipes
from mrc.train.record import write_record
from mrc.train.report import report
from mrc.train.resume import Resumer, preflight
from mrc.train.run_lock import run_lock
from mrc.train.selection import BestWeights, check_loaded, select_on
from mrc.train.teacher import attach_teacher, cache_teacher

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def quiet_library_bars(progress: bool) -> None:
    """transformers' and the hub's own bars ("Loading weights", downloads) follow ``trainer.progress`` and,
    like ours, never go to a log that is not a terminal."""
    if progress and sys.stderr.isatty():
        return
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()


def pick_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def windows_digest(windows: list[Window]) -> str:
    """A fingerprint of training windows (token ids and labels), to check that DDP ranks agree."""
    h = hashlib.sha1()
    for w in windows:
        h.update(np.asarray(w.input_ids, np.int64).tobytes())
        h.update(repr(w.labels).encode())
    return h.hexdigest()


def run(cfg: DictConfig, run_dir: str | Path, record: dict | None = None) -> float:
    """Train and evaluate as configured; write outputs into ``run_dir``; return the F1 that chose the reported
    epoch: ``data.in_domain``'s, or with ``trainer.select_on=calibration`` the held-out slice's (what sweepers get).

    ``record``: what Hydra would write to ``.hydra/`` (:func:`mrc.train.record.hydra_record`); it is
    written, with ``config.yaml``, only after a resumed run dir's state passed the compatibility check.
    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this with the same ``run_dir``; rank 0
    writes every output and every rank returns the same F1.
    """
    run_dir = Path(run_dir)
    d, device = distributed.setup(pick_device(cfg.trainer.device))
    try:
        with run_lock(run_dir, enabled=d.is_main), matmul_precision_scope(), \
                tf32_scope(bool(cfg.trainer.get("tf32", False)), device):  # one run per run dir (rank 0 holds it)
            return _run(cfg, run_dir, d, device, record)
    finally:
        distributed.teardown(d)


def check_geometry(cfg: DictConfig, encoder_config=None) -> None:
    """Refuse window lengths that cannot work: before anything runs (from the options), and again once the
    encoder is built (its position table; ``encoder_config``)."""
    data = cfg.data
    try:
        Geometry.of(data).check()
    except ValueError as e:
        raise ConfigError(f"data.max_len / data.max_query_len / data.doc_stride: {e}") from None
    try:
        window_keeps(cfg.trainer)
        num_workers(cfg.trainer)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    limit = max_positions(encoder_config) if encoder_config is not None else cfg.encoder.get("max_position")
    if isinstance(limit, int) and data.max_len > limit:
        where = "encoder.max_position" if encoder_config is None else f"the encoder {cfg.encoder.get('name_or_path')}"
        raise ConfigError(f"data.max_len={data.max_len} exceeds the {limit} positions of {where}; set "
                          f"data.max_len<={limit}")


def _run(cfg: DictConfig, run_dir: Path, d: Dist, device: str, record: dict | None = None) -> float:
    if d.enabled:
        distributed.check_same(str(run_dir.resolve()), "the run dir (give torchrun a fixed hydra.run.dir=DIR)", d)
    resume_state = preflight(cfg, run_dir, d)  # before anything in the run dir changes
    if d.is_main:
        write_record(run_dir, cfg, record)
    check_geometry(cfg)  # before the data: a job that fails here still has its record for mrc.report
    check_recipes(cfg)  # optim.layer_decay, trainer.ema / adversarial / rdrop: refused before the data
    select_on(cfg)  # trainer.select_on: null or calibration (with a slice to score), refused before the data
    quiet_library_bars(cfg.trainer.progress)
    seed_everything(cfg.seed)
    if device == "cpu" and cfg.trainer.get("retain_freed_memory", True):
        retain_freed_memory()
    prec = choose_precision(cfg.trainer, device)
    set_bf16_matmuls(prec.name == "bf16-matmul")  # restored when the run ends (run())
    with distributed.main_first(d):
        root, train, train_stats, splits = load_data(cfg, run_dir, main=d.is_main)
    if d.is_main:
        check_loaded(cfg, splits)
    texts = [e.question for e in train] + list(dict.fromkeys(e.context for e in train))
    log.info("building the encoder (%s) from %d training texts", cfg.encoder._target_.rsplit(".", 1)[-1], len(texts))
    enc = instantiate(cfg.encoder, texts=texts)
    check_geometry(cfg, enc.model.config)
    model = span_model(enc, partial(instantiate, cfg.neck), partial(instantiate, cfg.head), cfg.model,
                       finetune=instantiate(cfg.finetune).apply)  # freeze / adapters / LoRA
    model = model.to(device)
    run = Run(cfg, run_dir, d, device, prec, enc.tokenizer, splits)
    attach_teacher(cfg.get("distill"), model, enc.tokenizer, cfg.data.max_len, device)  # distill.teacher
    run.params = {**count_parameters(model), "precision": prec.name, "attention": attention_implementation(enc.model),
                  "cpu": cpu_name() if device == "cpu" else torch.cuda.get_device_name(device)}
    log.info("encoder attention: %s", run.params["attention"])
    log.info("parameters: %d trainable of %d (finetune=%s)", run.params["trainable"], run.params["total"],
             cfg.finetune._target_.rsplit(".", 1)[-1])
    data = _windows(run, train, train_stats, root)
    if model.distiller is not None and cfg.distill.get("cache", False):
        cached = cache_teacher(model, data.windows, batch_size=cfg.trainer.eval_batch_size, device=device,
                               pad_id=run.pad_id, amp_dtype=run.amp, top_k=int(cfg.distill.get("top_k", 64)),
                               progress=cfg.trainer.progress)
        if cached:
            data.info["teacher_cache"] = cached
        model.distiller.teacher = None  # every training batch now carries its scores: free the teacher
    if d.enabled:
        distributed.check_same(windows_digest(data.windows), "the training windows", d)
    run.job = job_info(cfg)
    run.logger = instantiate(cfg.logger, dir=str(run_dir), job=run.job) if d.is_main else NullLogger()
    try:
        run.logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        run.logger.summary({"params/trainable": run.params["trainable"], "params/total": run.params["total"]})
        return fit(run, model, data, resume_state, scaler=grad_scaler(prec, device))
    finally:
        run.logger.finish()


def _windows(run: Run, train: list, train_stats: dict, root) -> TrainingSet:
    """Cut the training questions and every split into windows of the configured geometry."""
    geometry, tokenizer = Geometry.of(run.cfg.data), run.tokenizer
    log.info("tokenizing %d training questions into windows of %d tokens", len(train), geometry.max_len)
    windows, feat = build_windows(train, tokenizer, geometry, training=True)
    features = {"train": feat.as_dict()}
    for s in run.splits.values():
        s.windows, f = build_windows(s.examples, tokenizer, geometry, training=False)
        features[s.name] = f.as_dict()
    log.info("data root %s: %d training examples -> %d windows; eval %s", root, len(train),
             len(windows), {n: len(s.examples) for n, s in run.splits.items()})
    return TrainingSet(train, windows, {"train": train_stats, "eval": {n: s.stats for n, s in run.splits.items()},
                                        "features": features, "root": str(root)})


def fit(run: Run, model, data: TrainingSet, resume_state: dict | None = None, scaler=None) -> float:
    """Train ``model`` for the configured epochs from where a resumed state left off, evaluating where asked,
    then write the outputs (rank 0); returns the F1 that chose the reported epoch."""
    cfg, d = run.cfg, run.dist
    tr = cfg.trainer
    total, last = total_steps(data.windows, tr, d.world_size), n_epochs(tr)
    opt, sched = build_optimizer(model, cfg.optim, total)
    recipes = Recipes.build(model, cfg)  # EMA, adversarial passes, R-Drop (layer_decay: in the optimizer)
    resumer = Resumer(cfg, run.dir, model, opt, sched, d, scaler=scaler, ema=recipes.ema)
    first_epoch, progress, run.state = resumer.restore(resume_state)
    state = run.state
    best = None  # trainer.select_on with eval_each_epoch=false: the chosen epoch's weights (mrc/train/selection.py)
    if tr.get("select_on") and not tr.get("eval_each_epoch", True):
        best = BestWeights(run.dir, persist=resumer.enabled and d.is_main)
        if d.is_main and state.resumed:
            best.restore(state.best_epoch)  # the chosen epoch so far: its weights from resume/best-<epoch>.pt
        elif d.is_main:
            best.prune(None)  # a fresh run: weights an earlier run left in this run dir go
    net = distributed.wrap(model, d, run.device)
    compiled = maybe_compile(net, tr)  # in place: the mode, or None
    run.params.update(compile=compiled or False, tf32=bool(tr.get("tf32", False)) and "cuda" in run.device,
                      recipes=check_recipes(cfg))
    loop = TrainLoop(model, opt, sched, tr, run.pad_id, run.device, amp_dtype=run.amp, logger=run.logger, net=net,
                     dist=d, scaler=scaler, recipes=recipes)
    for epoch in range(first_epoch, last + 1):
        ep, state.step = loop.run_epoch(data.windows, epoch=epoch, step=state.step, start=progress,
                                        on_resume_point=resumer.step_saver(state, epoch))
        progress = None
        state.train_seconds += ep["seconds"]
        state.windows_trained += ep["windows"]
        if tr.get("eval_each_epoch", True) or epoch == last or best is not None:
            with recipes.evaluation_weights():  # trainer.ema: evaluated and saved with the averaged weights
                evaluate_epoch(run, model, epoch, ep, best)
        else:
            state.history.append({"epoch": epoch, "loss": round(ep["loss"], 5)})
            run.logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"]}, step=state.step)
            log.info("epoch %d: loss %.4f (not evaluated: trainer.eval_each_epoch=false)", epoch, ep["loss"])
        resumer.epoch_done(state, epoch)
        if best is not None and d.is_main:
            best.prune(state.best_epoch)  # the state naming the chosen epoch is written: older weights can go
    if best is not None and d.is_main and state.best_results is None:
        final_evaluation(run, model, best)
    if d.is_main:
        report(run, data)
    return float(state.best_f1)
