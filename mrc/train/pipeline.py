"""One run: prepare data -> windows -> encoder + head -> train with per-epoch eval -> outputs."""
from __future__ import annotations

import hashlib
import logging
import random
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mrc.model import checkpoint
from mrc.train import distributed
from mrc.train.distributed import Dist
from mrc.data.features import Window, build_windows, check_lengths
from mrc.eval.inference import postprocess, score_windows
from mrc.train.loggers import NullLogger, job_info
from mrc.eval.metric import breakdown, evaluate
from mrc.eval.nulls import apply_threshold, tune_threshold, tune_threshold_for_loss
from mrc.eval.selective import METHODS, add_confidences, pool_summary
from mrc.train.inputs import ConfigError, check_overlap, load_data  # noqa: F401 (load_data: also for lexical)
from mrc.train.splits import Split, robustness_metrics
from mrc.model.encoder import attention_implementation
from mrc.model.finetune import count_parameters
from mrc.model.cpu import (BF16_MIN_SPEEDUP, VIAS, bf16_matmul_speedup, bf16_units, cpu_name, matmul_precision_scope,
                           set_bf16_matmuls)
from mrc.model.quantize import cpu_has_bf16
from mrc.model.span_model import SpanModel, max_positions
from mrc.train.cpu_memory import retain_freed_memory
from mrc.train.record import write_record
from mrc.train.resume import Resumer, RunProgress, preflight
from mrc.train.run_lock import run_lock
from mrc.train.selection import BestWeights, check_loaded, select_on, selection_split
from mrc.train.outputs import write_outputs
from mrc.train.teacher import attach_teacher, cache_teacher
from mrc.train.loop import (build_optimizer, epoch_padding, n_epochs, num_workers, padded_share, total_steps,
                            train_epoch, window_keeps)
from mrc.train.recipes import Recipes
from mrc.train.recipes import check as check_recipes
from mrc.train.precision import Precision, cpu_override, cuda_precision, grad_scaler, maybe_compile, tf32_scope

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


def score(split: Split, predictions: dict[str, str]) -> tuple[dict, dict]:
    """Official F1/EM of ``predictions`` on ``split`` with per-type / HasAns / NoAns groups, and per question."""
    summary, per_question = evaluate(split.gold, predictions)
    summary.update(breakdown(split.gold, per_question))
    return summary, per_question


def evaluate_split(model, split: Split, cfg: DictConfig, device, pad_id, amp) -> dict:
    """Predict one split and score it with the official metric."""
    t0 = time.perf_counter()
    dec = cfg.decode
    arrays = score_windows(model, split.windows, batch_size=cfg.trainer.eval_batch_size,
                           max_answer_len=dec.max_answer_len, n_best=dec.n_best, device=device,
                           pad_id=pad_id, amp_dtype=amp, progress=cfg.trainer.progress)
    threshold = None if dec.null_threshold == "tune" else dec.null_threshold
    preds, nbest = postprocess(split.examples, split.windows, *arrays, n_best=dec.n_best,
                               null_threshold=threshold)
    seconds = time.perf_counter() - t0
    summary, per_q = score(split, preds)
    summary.update(seconds=round(seconds, 3), examples_per_s=round(len(split.examples) / seconds, 2))
    log.info("scored split %s: %d questions, %d windows in %.0f s", split.name, len(split.examples),
             len(split.windows), seconds)  # a progress line per split: five splits take minutes on a CPU
    return {"summary": summary, "per_question": per_q, "predictions": preds, "nbest": nbest}


def retune_nulls(results: dict, splits: dict, tune_on: str, tune_for: str = "f1",
                 answerable_loss: float = 1.0) -> None:
    """Tune the null threshold on split ``tune_on``, then re-derive and re-score every split with it.
    ``tune_for``: ``f1`` maximises the split's F1; ``answerable_loss`` abstains as much as costs its answerable
    questions at most ``answerable_loss`` F1 points."""
    if tune_on not in results:
        raise ValueError(f"decode.tune_on={tune_on!r} is not an evaluated split ({sorted(results)})")
    nbest, gold = results[tune_on]["nbest"], splits[tune_on].gold
    if tune_for == "answerable_loss":
        threshold, lost = tune_threshold_for_loss(nbest, gold, answerable_loss)
        log.info("null threshold %s tuned on %s: its answerable questions lose %.2f F1 points (budget %g)",
                 threshold, tune_on, lost, answerable_loss)
    else:
        threshold, _ = tune_threshold(nbest, gold)
    for name, r in results.items():
        r["predictions"] = apply_threshold(r["nbest"], threshold)
        summary, r["per_question"] = score(splits[name], r["predictions"])
        r["summary"] = {**r["summary"], **summary, "null_threshold": threshold, "null_threshold_tuned_on": tune_on,
                        "null_threshold_tuned_for": tune_for}


def eval_scalars(split: str, summary: dict) -> dict[str, float]:
    """W&B keys for one split: eval/<split>/{f1,em}, eval/<split>/<type>/{f1,em}, eval/<split>/hasans/f1, ..."""
    out = {f"eval/{split}/{k.lower()}": summary[k] for k in ("F1", "EM")}
    out.update({f"eval/{split}/{k}": summary[k] for k in ("consistency", "distractor_capture") if k in summary})
    groups = {**summary.get("by_type", {}), **{g: summary[g] for g in ("HasAns", "NoAns") if g in summary}}
    for name, g in groups.items():
        out.update({f"eval/{split}/{name.lower() if name in ('HasAns', 'NoAns') else name}/{k.lower()}": g[k]
                    for k in ("F1", "EM")})
    out.update({f"eval/{split}/{name}/drop": g["drop"] for name, g in summary.get("paired_by_type", {}).items()})
    for method, m in (summary.get("abstention") or {}).items():  # e.g. eval/checklist/abstention/temperature/aurc
        if isinstance(m, dict):
            out.update({f"eval/{split}/abstention/{method}/{k}": v for k, v in m.items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
        check_lengths(data.max_len, data.max_query_len, data.doc_stride)
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


def cpu_bf16_mode(value) -> str:
    """Normalise ``trainer.cpu_bf16``: ``auto`` (bf16 where the CPU has native units), ``true`` or ``false``."""
    mode = str(value).strip().lower()
    if mode not in ("auto", "true", "false"):
        raise ConfigError(f"trainer.cpu_bf16={value!r}: must be auto, true or false")
    return mode


def choose_precision(trainer: DictConfig, device: str) -> Precision:
    """The run's :class:`~mrc.train.precision.Precision`: name (``fp32``, ``bf16``, ``fp16``, ``bf16-matmul``,
    ``bf16-autocast``), autocast dtype (None: no autocast) and whether a GradScaler is needed. On CUDA
    ``trainer.precision`` decides (:func:`~mrc.train.precision.cuda_precision`; ``auto`` + an old
    ``trainer.bf16: false`` = fp32); on the CPU ``trainer.cpu_bf16`` (unless ``trainer.precision`` forces fp32 /
    fp16: :func:`~mrc.train.precision.cpu_override`), where auto = bf16 where the CPU has native bf16 units and
    one product of e5_small's FFN shape, run the way ``trainer.cpu_bf16_via`` says, measures at least
    ``BF16_MIN_SPEEDUP`` times the fp32 speed. Master weights, optimizer state, the heads' scores and losses and
    decoding stay fp32 either way."""
    if str(device).startswith("cuda"):
        chosen = cuda_precision(trainer, device)
        log.info("precision %s on %s (trainer.precision=%s, trainer.bf16=%s)", chosen.name,
                 torch.cuda.get_device_name(device), trainer.get("precision", "auto"), trainer.get("bf16", True))
        return chosen
    forced = cpu_override(trainer)
    if forced is not None:
        return forced
    mode, native = cpu_bf16_mode(trainer.get("cpu_bf16", "auto")), cpu_has_bf16()
    via = str(trainer.get("cpu_bf16_via", "matmul"))
    if via not in VIAS:
        raise ConfigError(f"trainer.cpu_bf16_via={via!r}: must be one of {', '.join(VIAS)}")
    units = ", ".join(bf16_units()) or "no AVX512-BF16 / AMX units"
    if mode == "auto" and native:
        speedup = bf16_matmul_speedup(via)
        units += f"; a bf16 product via {via} measured {speedup:.2f}x the fp32 speed here"
        native = speedup >= BF16_MIN_SPEEDUP
    if mode == "false" or (mode == "auto" and not native):
        log.info("precision fp32 on the CPU (%s; %s; trainer.cpu_bf16=%s)", cpu_name(), units, mode)
        return Precision("fp32")
    if not native:
        log.warning("trainer.cpu_bf16=true: this CPU (%s) has no AVX512-BF16 / AMX units; bf16 runs emulated, "
                    "slower than fp32 (set trainer.cpu_bf16=auto)", cpu_name())
    log.info("precision bf16 via %s on the CPU (%s; %s; trainer.cpu_bf16=%s)", via, cpu_name(), units, mode)
    return Precision(f"bf16-{via}", torch.bfloat16 if via == "autocast" else None)


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
    precision, amp = prec.name, prec.autocast_dtype
    set_bf16_matmuls(precision == "bf16-matmul")  # restored when the run ends (run())
    with distributed.main_first(d):
        root, train, train_stats, splits = load_data(cfg, run_dir, main=d.is_main)
    if d.is_main:
        check_loaded(cfg, splits)
    texts = [e.question for e in train] + list(dict.fromkeys(e.context for e in train))
    log.info("building the encoder (%s) from %d training texts", cfg.encoder._target_.rsplit(".", 1)[-1], len(texts))
    enc = instantiate(cfg.encoder, texts=texts)
    check_geometry(cfg, enc.model.config)
    neck = instantiate(cfg.neck, hidden_size=enc.hidden_size,
                       num_layers=getattr(enc.model.config, "num_hidden_layers", 0))
    model = SpanModel(enc.model, instantiate(cfg.head, hidden_size=neck.out_size), neck=neck, **cfg.model)
    instantiate(cfg.finetune).apply(model)  # freeze / adapters / LoRA
    model = model.to(device)
    attach_teacher(cfg.get("distill"), model, enc.tokenizer, cfg.data.max_len, device)  # distill.teacher
    params = {**count_parameters(model), "precision": precision, "attention": attention_implementation(enc.model),
              "cpu": cpu_name() if device == "cpu" else torch.cuda.get_device_name(device)}
    log.info("encoder attention: %s", params["attention"])
    log.info("parameters: %d trainable of %d (finetune=%s)", params["trainable"], params["total"],
             cfg.finetune._target_.rsplit(".", 1)[-1])
    geometry = dict(max_len=cfg.data.max_len, max_query_len=cfg.data.max_query_len, doc_stride=cfg.data.doc_stride)
    log.info("tokenizing %d training questions into windows of %d tokens", len(train), cfg.data.max_len)
    train_windows, feat = build_windows(train, enc.tokenizer, training=True, **geometry)
    features = {"train": feat.as_dict()}
    for s in splits.values():
        s.windows, f = build_windows(s.examples, enc.tokenizer, training=False, **geometry)
        features[s.name] = f.as_dict()
    log.info("data root %s: %d training examples -> %d windows; eval %s", root, len(train),
             len(train_windows), {n: len(s.examples) for n, s in splits.items()})
    teacher_cache = None
    if model.distiller is not None and cfg.distill.get("cache", False):
        teacher_cache = cache_teacher(model, train_windows, batch_size=cfg.trainer.eval_batch_size, device=device,
                                      pad_id=enc.tokenizer.pad_token_id, amp_dtype=amp,
                                      top_k=int(cfg.distill.get("top_k", 64)), progress=cfg.trainer.progress)
        model.distiller.teacher = None  # every training batch now carries its scores: free the teacher
    if d.enabled:
        distributed.check_same(windows_digest(train_windows), "the training windows", d)
    job = job_info(cfg)
    logger = instantiate(cfg.logger, dir=str(run_dir), job=job) if d.is_main else NullLogger()
    try:
        logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        logger.summary({"params/trainable": params["trainable"], "params/total": params["total"]})
        return _fit_and_report(cfg, run_dir, model, enc.tokenizer, train, train_windows, splits, device,
                               amp, logger, {"train": train_stats, "eval": {n: s.stats for n, s in splits.items()},
                                             "features": features, "root": str(root),
                                             **({"teacher_cache": teacher_cache} if teacher_cache else {})},
                               job, d, resume_state,
                               params, scaler=grad_scaler(prec, device))
    finally:
        logger.finish()


def _fit_and_report(cfg, run_dir, model, tokenizer, train, train_windows, splits, device, amp, logger, data_info,
                    job, d: Dist = Dist(), resume_state: dict | None = None, params: dict | None = None, scaler=None):
    tr, pad_id = cfg.trainer, tokenizer.pad_token_id
    total, last = total_steps(train_windows, tr, d.world_size), n_epochs(tr)
    opt, sched = build_optimizer(model, cfg.optim, total)
    recipes = Recipes.build(model, cfg)  # EMA, adversarial passes, R-Drop (layer_decay: in the optimizer)
    resumer = Resumer(cfg, run_dir, model, opt, sched, d, scaler=scaler, ema=recipes.ema)
    first_epoch, progress, run_state = resumer.restore(resume_state)
    best = None  # trainer.select_on with eval_each_epoch=false: the chosen epoch's weights (mrc/train/selection.py)
    if tr.get("select_on") and not tr.get("eval_each_epoch", True):
        best = BestWeights(run_dir, persist=resumer.enabled and d.is_main)
        if d.is_main and run_state.resumed:
            best.restore(run_state.best_epoch)  # the chosen epoch so far: its weights from resume/best-<epoch>.pt
        elif d.is_main:
            best.prune(None)  # a fresh run: weights an earlier run left in this run dir go
    net = distributed.wrap(model, d, device)
    compiled = maybe_compile(net, tr)  # in place: the mode, or None
    if params is not None:
        params.update(compile=compiled or False, tf32=bool(tr.get("tf32", False)) and "cuda" in device,
                      recipes=check_recipes(cfg))
    for epoch in range(first_epoch, last + 1):
        ep, run_state.step = train_epoch(model, train_windows, opt, sched, epoch=epoch, trainer=tr, pad_id=pad_id,
                                         device=device, amp_dtype=amp, logger=logger, step=run_state.step, net=net,
                                         dist=d, start=progress, on_resume_point=resumer.step_saver(run_state, epoch),
                                         scaler=scaler, recipes=recipes)
        progress = None
        run_state.train_seconds += ep["seconds"]
        run_state.windows_trained += ep["windows"]
        if tr.get("eval_each_epoch", True) or epoch == last or best is not None:
            with recipes.evaluation_weights():  # trainer.ema: evaluated and saved with the averaged weights
                _evaluate_epoch(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state, epoch, ep, d,
                                best)
        else:
            run_state.history.append({"epoch": epoch, "loss": round(ep["loss"], 5)})
            logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"]}, step=run_state.step)
            log.info("epoch %d: loss %.4f (not evaluated: trainer.eval_each_epoch=false)", epoch, ep["loss"])
        resumer.epoch_done(run_state, epoch)
        if best is not None and d.is_main:
            best.prune(run_state.best_epoch)  # the state naming the chosen epoch is written: older weights can go
    if best is not None and d.is_main and run_state.best_results is None:
        _final_evaluation(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state, best)
    if d.is_main:
        _report(cfg, run_dir, train, train_windows, splits, device, logger, data_info, job, run_state, d, params)
    return float(run_state.best_f1)


def _score_splits(cfg, model, splits, device, amp, pad_id, full: bool = True) -> tuple[dict, dict]:
    """(results per split, calibrators): every split of ``splits`` predicted and scored (null threshold tuned
    when asked); ``full``: also the robustness metrics and the confidences (calibrators fitted on the slice)."""
    results = {n: evaluate_split(model, s, cfg, device, pad_id, amp) for n, s in splits.items()}
    if cfg.decode.null_threshold == "tune":
        retune_nulls(results, splits, cfg.decode.tune_on, cfg.decode.get("tune_for", "f1"),
                     cfg.decode.get("answerable_loss", 1.0))
    if not full:
        return results, {}
    preds = {n: r["predictions"] for n, r in results.items()}
    per_q = {n: r["per_question"] for n, r in results.items()}
    for n, s in splits.items():
        results[n]["summary"].update(robustness_metrics(n, s.spec, s.path, preds, per_q, s.gold))
    return results, add_confidences(results, splits)  # calibrators fitted on the calibration split only


def _evaluate_epoch(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state: RunProgress, epoch: int,
                    ep: dict, d: Dist, best: BestWeights | None = None) -> None:
    """Evaluate after an epoch; keep the reported epoch (and its checkpoint): the last one, or with
    ``trainer.select_on`` the best by the calibration slice's F1 (a tie keeps the earlier epoch).

    ``best`` (``trainer.select_on`` with ``eval_each_epoch=false``): only the selection split (and
    ``decode.tune_on`` when the threshold is tuned) is scored, and a new best epoch's weights go into ``best``;
    the eval splits are scored once, after the last epoch, with them (:func:`_final_evaluation`).

    Under DDP rank 0 scores every window with the unwrapped model while the other ranks wait for
    its selection F1 (a broadcast). Scoring on one rank keeps the predictions identical to a
    single-process evaluation of the same weights (same eval batches, same padding) and needs no
    gathering of per-window arrays; evaluation is a small share of a DDP run's time. The broadcast
    F1 makes the best-epoch decision the same on every rank.
    """
    pad_id, results, f1, calibration, on = tokenizer.pad_token_id, None, None, None, selection_split(cfg)
    if best is not None:
        tuned_on = cfg.decode.tune_on if cfg.decode.null_threshold == "tune" else None
        splits = {n: s for n, s in splits.items() if n in (on, tuned_on)}
    if d.is_main:
        results, calibration = _score_splits(cfg, model, splits, device, amp, pad_id, full=best is None)
        run_state.eval_seconds += sum(r["summary"]["seconds"] for r in results.values())
        f1 = results[on]["summary"]["F1"]
        row = {"epoch": epoch, "loss": round(ep["loss"], 5),
               **{f"{n}/{k}": r["summary"][k] for n, r in results.items() for k in ("F1", "EM")}}
        run_state.history.append(row)
        logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"],
                    **{k: v for n, r in results.items() for k, v in eval_scalars(n, r["summary"]).items()}},
                   step=run_state.step)
        log.info("epoch %d: loss %.4f, %s", epoch, ep["loss"],
                 ", ".join(f"{n} F1 {r['summary']['F1']:.2f} EM {r['summary']['EM']:.2f}" for n, r in results.items()))
    f1 = distributed.broadcast(f1, d)
    if cfg.trainer.get("select_on"):
        run_state.selection_f1[str(epoch)] = f1
    # select_on null: the last epoch is reported (no split held out of training to choose on); an eval split never
    # chooses
    if f1 > run_state.best_f1 or not cfg.trainer.get("select_on"):
        run_state.best_f1, run_state.best_epoch = f1, epoch
        if best is not None:  # the eval splits are scored after the last epoch, with these weights
            if d.is_main:
                best.keep(model, epoch)
            return
        run_state.best_results = results
        if d.is_main and cfg.trainer.save_checkpoint:
            tuned = results[on]["summary"].get("null_threshold", "config")
            checkpoint.save(run_dir / "checkpoint", model, tokenizer, cfg, null_threshold=tuned,
                            calibration=calibration)


def _final_evaluation(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state: RunProgress,
                      best: BestWeights) -> None:
    """``trainer.select_on`` with ``eval_each_epoch=false``, rank 0: put the chosen epoch's weights back into
    ``model``, score every split once with them, and save them as the checkpoint."""
    best.load_into(model)
    results, calibration = _score_splits(cfg, model, splits, device, amp, tokenizer.pad_token_id)
    run_state.eval_seconds += sum(r["summary"]["seconds"] for r in results.values())
    run_state.best_results = results
    logger.log({k: v for n, r in results.items() for k, v in eval_scalars(n, r["summary"]).items()},
               step=run_state.step)
    log.info("epoch %d (chosen on %s): %s", run_state.best_epoch, selection_split(cfg),
             ", ".join(f"{n} F1 {r['summary']['F1']:.2f} EM {r['summary']['EM']:.2f}" for n, r in results.items()))
    if cfg.trainer.save_checkpoint:
        tuned = results[selection_split(cfg)]["summary"].get("null_threshold", "config")
        checkpoint.save(run_dir / "checkpoint", model, tokenizer, cfg, null_threshold=tuned, calibration=calibration)


def _selection(cfg, run_state: RunProgress, logger) -> dict:
    """``trainer.select_on``: metrics.json's ``selected_epoch`` and ``selection`` (the split, the chosen epoch's F1
    there and every scored epoch's), in the log and the logger's summary."""
    on, by_epoch = cfg.trainer.select_on, dict(run_state.selection_f1)
    log.info("selected epoch %s of %d by %s F1 %.2f (ties: the earlier epoch; %s); the results reported are its",
             run_state.best_epoch, n_epochs(cfg.trainer), on, run_state.best_f1,
             ", ".join(f"epoch {e} {f:.2f}" for e, f in by_epoch.items()))
    logger.summary({"selected_epoch": run_state.best_epoch, f"selection/{on}/f1": run_state.best_f1})
    return {"selected_epoch": run_state.best_epoch,
            "selection": {"split": on, "metric": "F1", "f1": run_state.best_f1, "by_epoch": by_epoch}}


def _report(cfg, run_dir, train, train_windows, splits, device, logger, data_info, job, run_state: RunProgress,
            d: Dist, params: dict | None = None) -> None:
    """metrics.json and the best epoch's predictions, scores and errors (rank 0 only)."""
    tr, train_s = cfg.trainer, run_state.train_seconds
    metrics = {
        "job": job, "in_domain": cfg.data.in_domain, "best_epoch": run_state.best_epoch,
        "splits": {n: r["summary"] for n, r in run_state.best_results.items()},
        "train": {"examples": len(train), "windows": len(train_windows), "epochs": tr.epochs, "steps": run_state.step,
                  "windows_trained": run_state.windows_trained, "seconds": round(train_s, 2),
                  "examples_per_s": round(len(train) * tr.epochs / train_s, 2),
                  "windows_per_s": round(run_state.windows_trained / train_s, 2)},
        "eval_seconds": round(run_state.eval_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "data": data_info, "history": run_state.history,
    }
    if tr.get("select_on"):
        metrics.update(_selection(cfg, run_state, logger))
    pool = pool_summary(run_state.best_results, splits, list(cfg.decode.get("abstention_pool") or []), cfg.seed)
    if pool:
        metrics["abstention"] = pool
        logger.summary({f"abstention/{m}/{k}": v for m in METHODS if m in pool for k, v in pool[m].items()
                        if isinstance(v, (int, float)) and not isinstance(v, bool)})
        log.info("abstention on the pool %s: %s", "+".join(pool["splits"]), "; ".join(
            f"{m} AURC {pool[m]['aurc']:.4f} ECE {pool[m]['ece']:.4f} coverage@F1 80 {pool[m]['coverage_at_80']:.3f}"
            for m in METHODS if m in pool))
    if params:
        metrics["train"].update(trainable_params=params["trainable"], params=params["total"],
                                precision=params.get("precision", "fp32"), cpu=params.get("cpu"),
                                **{k: params[k] for k in ("attention", "compile", "tf32", "recipes") if k in params})
    tokens = [epoch_padding(train_windows, tr, e, d.world_size) for e in range(1, n_epochs(tr) + 1)]
    real, padded = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    metrics["train"].update(group_by_length=bool(tr.get("group_by_length", True)), tokens_trained=real,
                            padded_share=round(padded_share(real, padded), 4), num_workers=num_workers(tr))
    log.info("training batches: padding was %.1f %% of the token positions (trainer.group_by_length=%s)",
             100 * padded_share(real, padded), metrics["train"]["group_by_length"])
    if d.enabled:
        metrics["train"]["world_size"] = d.world_size
    if run_state.resumed:
        metrics["train"]["resumed"] = run_state.resumed
    if device.startswith("cuda"):
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_outputs(run_dir, run_state.best_results, metrics, cfg, logger, splits)
    ckpt = Path(run_dir) / "checkpoint"
    where = (f"; checkpoint {ckpt} (serve it: python -m mrc serve {ckpt})" if cfg.trainer.save_checkpoint
             and ckpt.is_dir() else "")
    log.info("done: run dir %s (metrics.json, predictions/)%s", run_dir, where)
