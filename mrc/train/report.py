"""The end of a training run (rank 0): ``metrics.json`` with the reported epoch's figures, the training facts,
the chosen epoch and the abstention pool, then predictions, scores and errors (:mod:`mrc.train.outputs`)."""
from __future__ import annotations

import logging
import resource

import torch

from mrc.eval.selective import METHODS, pool_summary
from mrc.train.context import Run, TrainingSet
from mrc.train.loop import epoch_padding, n_epochs, num_workers, padded_share
from mrc.train.outputs import write_outputs

log = logging.getLogger(__name__)


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def selection(run: Run) -> dict:
    """``trainer.select_on``: metrics.json's ``selected_epoch`` and ``selection`` (the split, the chosen epoch's F1
    there and every scored epoch's), in the log and the logger's summary."""
    on, state = run.cfg.trainer.select_on, run.state
    by_epoch = dict(state.selection_f1)
    log.info("selected epoch %s of %d by %s F1 %.2f (ties: the earlier epoch; %s); the results reported are its",
             state.best_epoch, n_epochs(run.cfg.trainer), on, state.best_f1,
             ", ".join(f"epoch {e} {f:.2f}" for e, f in by_epoch.items()))
    run.logger.summary({"selected_epoch": state.best_epoch, f"selection/{on}/f1": state.best_f1})
    return {"selected_epoch": state.best_epoch,
            "selection": {"split": on, "metric": "F1", "f1": state.best_f1, "by_epoch": by_epoch}}


def _abstention(run: Run) -> dict | None:
    """The abstention metrics on the pool of ``decode.abstention_pool`` (None when it is empty)."""
    cfg = run.cfg
    pool = pool_summary(run.state.best_results, run.splits, list(cfg.decode.get("abstention_pool") or []), cfg.seed)
    if pool:
        run.logger.summary({f"abstention/{m}/{k}": v for m in METHODS if m in pool for k, v in pool[m].items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool)})
        log.info("abstention on the pool %s: %s", "+".join(pool["splits"]), "; ".join(
            f"{m} AURC {pool[m]['aurc']:.4f} ECE {pool[m]['ece']:.4f} coverage@F1 80 {pool[m]['coverage_at_80']:.3f}"
            for m in METHODS if m in pool))
    return pool


def _training(run: Run, data: TrainingSet) -> dict:
    """metrics.json's ``train`` section."""
    tr, state, params = run.cfg.trainer, run.state, run.params
    train_s = state.train_seconds
    out = {"examples": len(data.examples), "windows": len(data.windows), "epochs": tr.epochs, "steps": state.step,
           "windows_trained": state.windows_trained, "seconds": round(train_s, 2),
           "examples_per_s": round(len(data.examples) * tr.epochs / train_s, 2),
           "windows_per_s": round(state.windows_trained / train_s, 2)}
    if params:
        out.update(trainable_params=params["trainable"], params=params["total"],
                   precision=params.get("precision", "fp32"), cpu=params.get("cpu"),
                   **{k: params[k] for k in ("attention", "compile", "tf32", "recipes") if k in params})
    world = run.dist.world_size
    tokens = [epoch_padding(data.windows, tr, e, world) for e in range(1, n_epochs(tr) + 1)]
    real, padded = sum(t[0] for t in tokens), sum(t[1] for t in tokens)
    out.update(group_by_length=bool(tr.get("group_by_length", True)), tokens_trained=real,
               padded_share=round(padded_share(real, padded), 4), num_workers=num_workers(tr))
    log.info("training batches: padding was %.1f %% of the token positions (trainer.group_by_length=%s)",
             100 * padded_share(real, padded), out["group_by_length"])
    if run.dist.enabled:
        out["world_size"] = world
    if state.resumed:
        out["resumed"] = state.resumed
    return out


def report(run: Run, data: TrainingSet) -> None:
    """metrics.json and the reported epoch's predictions, scores and errors (rank 0 only)."""
    cfg, state = run.cfg, run.state
    metrics = {
        "job": run.job, "in_domain": cfg.data.in_domain, "best_epoch": state.best_epoch,
        "splits": {n: r["summary"] for n, r in state.best_results.items()},
        "train": _training(run, data),
        "eval_seconds": round(state.eval_seconds, 2), "peak_rss_mb": round(peak_rss_mb(), 1),
        "data": data.info, "history": state.history,
    }
    if cfg.trainer.get("select_on"):
        metrics.update(selection(run))
    pool = _abstention(run)
    if pool:
        metrics["abstention"] = pool
    if run.device.startswith("cuda"):
        metrics["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    write_outputs(run.dir, state.best_results, metrics, cfg, run.logger, run.splits)
    ckpt = run.dir / "checkpoint"
    where = (f"; checkpoint {ckpt} (serve it: python -m mrc serve {ckpt})" if cfg.trainer.save_checkpoint
             and ckpt.is_dir() else "")
    log.info("done: run dir %s (metrics.json, predictions/)%s", run.dir, where)
