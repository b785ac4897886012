"""One run: prepare data -> windows -> encoder + head -> train with per-epoch eval -> outputs."""
from __future__ import annotations

import hashlib
import logging
import random
import resource
import time
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mrc.model import checkpoint
from mrc.train import distributed
from mrc.data.squad import Example, load_squad
from mrc.data.download import resolve_data_root
from mrc.train.distributed import Dist
from mrc.data.features import Window, build_windows
from mrc.eval.inference import postprocess, score_windows
from mrc.train.loggers import NullLogger, job_info
from mrc.eval.metric import GoldQuestion, breakdown, evaluate, load_references
from mrc.eval.nulls import apply_threshold, tune_threshold
from mrc.train.splits import Split, input_paths, materialise, robustness_metrics, split_specs
from mrc.model.span_model import SpanModel
from mrc.train.cpu_memory import retain_freed_memory
from mrc.train.resume import Resumer, RunProgress
from mrc.train.outputs import write_outputs
from mrc.train.loop import build_optimizer, n_epochs, total_steps, train_epoch

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    return ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name


def load_data(cfg: DictConfig, run_dir: Path, main: bool = True):
    """Resolve the data root, run the data preparer, load training examples and build/load eval splits.

    ``main=False`` (DDP ranks other than 0, which neither prepare data nor evaluate): training
    examples only, read after rank 0 has prepared them; no eval splits.
    """
    root = resolve_data_root(cfg.data.root)
    specs = split_specs(cfg.data.eval) if main else {}
    train_specs = split_specs({f"train{i}": entry for i, entry in enumerate(cfg.data.train)})
    needed = input_paths(train_specs) + input_paths(specs)
    if cfg.data.get("prepare") and main:
        instantiate(cfg.data.prepare, root=root, needed=needed)
    train, train_stats = [], []
    for name, spec in train_specs.items():
        path, build_counts = materialise(name, spec, root, run_dir)
        if path is None:
            continue
        examples, stats = load_squad(path, training=True)
        train.extend(examples)
        train_stats.append(stats.as_dict() | ({"build": build_counts} if build_counts else {}))
    if cfg.data.limit_train:
        train = train[:cfg.data.limit_train]
    splits = {}
    for name, spec in specs.items():
        path, build_counts = materialise(name, spec, root, run_dir)
        if path is None:
            continue
        examples, stats = load_squad(path, training=False)
        gold = load_references(path)
        if cfg.data.limit_eval:
            examples = examples[:cfg.data.limit_eval]
            keep = {e.id for e in examples}
            gold = [g for g in gold if g.id in keep]
        stats = stats.as_dict() | ({"build": build_counts} if build_counts else {})
        splits[name] = Split(name, path, examples, gold, stats, spec)
    if cfg.data.get("check_overlap", True):
        check_overlap(train, splits)
    if main and cfg.data.in_domain not in splits:
        raise ValueError(f"data.in_domain={cfg.data.in_domain!r} is not among the loaded eval splits "
                         f"{sorted(splits)}")
    if not train:
        raise ValueError(f"no usable training examples in {list(cfg.data.train)} under {root}")
    return root, train, train_stats, splits


def check_overlap(train: list[Example], splits: dict[str, Split]) -> None:
    """Refuse a run whose training data shares question ids with an evaluation split."""
    train_ids = {e.id for e in train}
    for name, split in splits.items():
        shared = sorted(train_ids.intersection(g.id for g in split.gold))
        if shared:
            raise ValueError(f"eval split {name!r} ({split.path}) shares {len(shared)} question ids with the "
                             f"training data, e.g. {shared[:3]}; fix data.train/data.eval or set "
                             "data.check_overlap=false")


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
    return {"summary": summary, "per_question": per_q, "predictions": preds, "nbest": nbest}


def retune_nulls(results: dict, splits: dict, tune_on: str) -> None:
    """Tune the null threshold on split ``tune_on``, then re-derive and re-score every split with it."""
    if tune_on not in results:
        raise ValueError(f"decode.tune_on={tune_on!r} is not an evaluated split ({sorted(results)})")
    threshold, _ = tune_threshold(results[tune_on]["nbest"], splits[tune_on].gold)
    for name, r in results.items():
        r["predictions"] = apply_threshold(r["nbest"], threshold)
        summary, r["per_question"] = score(splits[name], r["predictions"])
        r["summary"] = {**r["summary"], **summary, "null_threshold": threshold, "null_threshold_tuned_on": tune_on}


def eval_scalars(split: str, summary: dict) -> dict[str, float]:
    """W&B keys for one split: eval/<split>/{f1,em}, eval/<split>/<type>/{f1,em}, eval/<split>/hasans/f1, ..."""
    out = {f"eval/{split}/{k.lower()}": summary[k] for k in ("F1", "EM")}
    out.update({f"eval/{split}/{k}": summary[k] for k in ("consistency", "distractor_capture") if k in summary})
    groups = {**summary.get("by_type", {}), **{g: summary[g] for g in ("HasAns", "NoAns") if g in summary}}
    for name, g in groups.items():
        out.update({f"eval/{split}/{name.lower() if name in ('HasAns', 'NoAns') else name}/{k.lower()}": g[k]
                    for k in ("F1", "EM")})
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


def run(cfg: DictConfig, run_dir: str | Path) -> float:
    """Train and evaluate as configured; write outputs into ``run_dir``; return in-domain F1.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this with the same ``run_dir``; rank 0
    writes every output and every rank returns the same F1.
    """
    run_dir = Path(run_dir)
    d, device = distributed.setup(pick_device(cfg.trainer.device))
    try:
        return _run(cfg, run_dir, d, device)
    finally:
        distributed.teardown(d)


def _run(cfg: DictConfig, run_dir: Path, d: Dist, device: str) -> float:
    if d.enabled:
        distributed.check_same(str(run_dir.resolve()), "the run dir (give torchrun a fixed hydra.run.dir=DIR)", d)
    run_dir.mkdir(parents=True, exist_ok=True)
    if d.is_main:
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    seed_everything(cfg.seed)
    if device == "cpu" and cfg.trainer.get("retain_freed_memory", True):
        retain_freed_memory()
    amp = torch.bfloat16 if device.startswith("cuda") and cfg.trainer.bf16 else None
    with distributed.main_first(d):
        root, train, train_stats, splits = load_data(cfg, run_dir, main=d.is_main)
    texts = [e.question for e in train] + list(dict.fromkeys(e.context for e in train))
    enc = instantiate(cfg.encoder, texts=texts)
    model = SpanModel(enc.model, instantiate(cfg.head, hidden_size=enc.hidden_size), **cfg.model).to(device)
    geometry = dict(max_len=cfg.data.max_len, max_query_len=cfg.data.max_query_len, doc_stride=cfg.data.doc_stride)
    train_windows, feat = build_windows(train, enc.tokenizer, training=True, **geometry)
    features = {"train": feat.as_dict()}
    for s in splits.values():
        s.windows, f = build_windows(s.examples, enc.tokenizer, training=False, **geometry)
        features[s.name] = f.as_dict()
    log.info("data root %s: %d training examples -> %d windows; eval %s", root, len(train),
             len(train_windows), {n: len(s.examples) for n, s in splits.items()})
    if d.enabled:
        distributed.check_same(windows_digest(train_windows), "the training windows", d)
    job = job_info(cfg)
    logger = instantiate(cfg.logger, dir=str(run_dir), job=job) if d.is_main else NullLogger()
    try:
        logger.log_config(OmegaConf.to_container(cfg, resolve=True))
        return _fit_and_report(cfg, run_dir, model, enc.tokenizer, train, train_windows, splits, device,
                               amp, logger, {"train": train_stats, "eval": {n: s.stats for n, s in splits.items()},
                                             "features": features, "root": str(root)}, job, d)
    finally:
        logger.finish()


def _fit_and_report(cfg, run_dir, model, tokenizer, train, train_windows, splits, device, amp, logger, data_info,
                    job, d: Dist = Dist()):
    tr, pad_id = cfg.trainer, tokenizer.pad_token_id
    total, last = total_steps(train_windows, tr, d.world_size), n_epochs(tr)
    opt, sched = build_optimizer(model, cfg.optim, total)
    resumer = Resumer(cfg, run_dir, model, opt, sched, d)
    first_epoch, progress, run_state = resumer.restore()
    net = distributed.wrap(model, d, device)
    for epoch in range(first_epoch, last + 1):
        ep, run_state.step = train_epoch(model, train_windows, opt, sched, epoch=epoch, trainer=tr, pad_id=pad_id,
                                         device=device, amp_dtype=amp, logger=logger, step=run_state.step, net=net,
                                         dist=d, start=progress, on_resume_point=resumer.step_saver(run_state, epoch))
        progress = None
        run_state.train_seconds += ep["seconds"]
        run_state.windows_trained += ep["windows"]
        if tr.get("eval_each_epoch", True) or epoch == last:
            _evaluate_epoch(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state, epoch, ep, d)
        else:
            run_state.history.append({"epoch": epoch, "loss": round(ep["loss"], 5)})
            logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"]}, step=run_state.step)
            log.info("epoch %d: loss %.4f (not evaluated: trainer.eval_each_epoch=false)", epoch, ep["loss"])
        resumer.epoch_done(run_state, epoch)
    if d.is_main:
        _report(cfg, run_dir, train, train_windows, splits, device, logger, data_info, job, run_state, d)
    return float(run_state.best_f1)


def _evaluate_epoch(cfg, run_dir, model, tokenizer, splits, device, amp, logger, run_state: RunProgress, epoch: int,
                    ep: dict, d: Dist) -> None:
    """Evaluate every split after an epoch; keep the best epoch (and its checkpoint) by in-domain F1.

    Under DDP rank 0 scores every window with the unwrapped model while the other ranks wait for
    its in-domain F1 (a broadcast). Scoring on one rank keeps the predictions identical to a
    single-process evaluation of the same weights (same eval batches, same padding) and needs no
    gathering of per-window arrays; evaluation is a small share of a DDP run's time. The broadcast
    F1 makes the best-epoch decision the same on every rank.
    """
    pad_id, results, f1 = tokenizer.pad_token_id, None, None
    if d.is_main:
        results = {n: evaluate_split(model, s, cfg, device, pad_id, amp) for n, s in splits.items()}
        if cfg.decode.null_threshold == "tune":
            retune_nulls(results, splits, cfg.decode.tune_on)
        preds = {n: r["predictions"] for n, r in results.items()}
        for n, s in splits.items():
            results[n]["summary"].update(robustness_metrics(n, s.spec, s.path, preds))
        run_state.eval_seconds += sum(r["summary"]["seconds"] for r in results.values())
        f1 = results[cfg.data.in_domain]["summary"]["F1"]
        row = {"epoch": epoch, "loss": round(ep["loss"], 5),
               **{f"{n}/{k}": r["summary"][k] for n, r in results.items() for k in ("F1", "EM")}}
        run_state.history.append(row)
        logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"],
                    **{k: v for n, r in results.items() for k, v in eval_scalars(n, r["summary"]).items()}},
                   step=run_state.step)
        log.info("epoch %d: loss %.4f, %s", epoch, ep["loss"],
                 ", ".join(f"{n} F1 {r['summary']['F1']:.2f} EM {r['summary']['EM']:.2f}" for n, r in results.items()))
    f1 = distributed.broadcast(f1, d)
    if f1 > run_state.best_f1:
        run_state.best_f1, run_state.best_epoch, run_state.best_results = f1, epoch, results
        if d.is_main and cfg.trainer.save_checkpoint:
            tuned = results[cfg.data.in_domain]["summary"].get("null_threshold", "config")
            checkpoint.save(run_dir / "checkpoint", model, tokenizer, cfg, null_threshold=tuned)


def _report(cfg, run_dir, train, train_windows, splits, device, logger, data_info, job, run_state: RunProgress,
            d: Dist) -> None:
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
    if d.enabled:
        metrics["train"]["world_size"] = d.world_size
    if run_state.resumed:
        metrics["train"]["resumed"] = run_state.resumed
    if device.startswith("cuda"):
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_outputs(run_dir, run_state.best_results, metrics, cfg, logger, splits)
