"""Evaluation inside a training run: after an epoch (and, with ``trainer.select_on`` and
``eval_each_epoch=false``, once more with the chosen epoch's weights), which epoch is reported, and its
checkpoint. Scoring one split is :mod:`mrc.eval.scoring`; this adds the run's robustness metrics, confidences,
logging and the choice of epoch."""
from __future__ import annotations

import logging

from mrc.eval.scoring import evaluate_split, retune_nulls
from mrc.eval.selective import add_confidences
from mrc.model import checkpoint
from mrc.train import distributed
from mrc.train.context import Run
from mrc.train.selection import BestWeights, selection_split
from mrc.train.splits import robustness_metrics

log = logging.getLogger(__name__)


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


def score_splits(run: Run, model, splits: dict, full: bool = True) -> tuple[dict, dict]:
    """(results per split, calibrators): every split of ``splits`` predicted and scored (null threshold tuned
    when asked); ``full``: also the robustness metrics and the confidences (calibrators fitted on the slice)."""
    cfg = run.cfg
    results = {n: evaluate_split(model, s, cfg.decode, batch_size=cfg.trainer.eval_batch_size, device=run.device,
                                 pad_id=run.pad_id, amp_dtype=run.amp, progress=cfg.trainer.progress)
               for n, s in splits.items()}
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


def _save(run: Run, model, results: dict, calibration: dict) -> None:
    """The reported epoch's checkpoint (with the threshold tuned on the selection split, if any)."""
    if run.cfg.trainer.save_checkpoint:
        tuned = results[selection_split(run.cfg)]["summary"].get("null_threshold", "config")
        checkpoint.save(run.dir / "checkpoint", model, run.tokenizer, run.cfg, null_threshold=tuned,
                        calibration=calibration)


def _summary_line(results: dict) -> str:
    return ", ".join(f"{n} F1 {r['summary']['F1']:.2f} EM {r['summary']['EM']:.2f}" for n, r in results.items())


def evaluate_epoch(run: Run, model, epoch: int, ep: dict, best: BestWeights | None = None) -> None:
    """Evaluate after an epoch; keep the reported epoch (and its checkpoint): the last one, or with
    ``trainer.select_on`` the best by the calibration slice's F1 (a tie keeps the earlier epoch).

    ``best`` (``trainer.select_on`` with ``eval_each_epoch=false``): only the selection split (and
    ``decode.tune_on`` when the threshold is tuned) is scored, and a new best epoch's weights go into ``best``;
    the eval splits are scored once, after the last epoch, with them (:func:`final_evaluation`).

    Under DDP rank 0 scores every window with the unwrapped model while the other ranks wait for
    its selection F1 (a broadcast). Scoring on one rank keeps the predictions identical to a
    single-process evaluation of the same weights (same eval batches, same padding) and needs no
    gathering of per-window arrays; evaluation is a small share of a DDP run's time. The broadcast
    F1 makes the best-epoch decision the same on every rank.
    """
    cfg, state, splits = run.cfg, run.state, run.splits
    results, f1, calibration, on = None, None, None, selection_split(cfg)
    if best is not None:
        tuned_on = cfg.decode.tune_on if cfg.decode.null_threshold == "tune" else None
        splits = {n: s for n, s in splits.items() if n in (on, tuned_on)}
    if run.is_main:
        results, calibration = score_splits(run, model, splits, full=best is None)
        state.eval_seconds += sum(r["summary"]["seconds"] for r in results.values())
        f1 = results[on]["summary"]["F1"]
        row = {"epoch": epoch, "loss": round(ep["loss"], 5),
               **{f"{n}/{k}": r["summary"][k] for n, r in results.items() for k in ("F1", "EM")}}
        state.history.append(row)
        run.logger.log({"epoch": epoch, "train/epoch_loss": ep["loss"],
                        **{k: v for n, r in results.items() for k, v in eval_scalars(n, r["summary"]).items()}},
                       step=state.step)
        log.info("epoch %d: loss %.4f, %s", epoch, ep["loss"], _summary_line(results))
    f1 = distributed.broadcast(f1, run.dist)
    if cfg.trainer.get("select_on"):
        state.selection_f1[str(epoch)] = f1
    # select_on null: the last epoch is reported (no split held out of training to choose on); an eval split never
    # chooses
    if f1 > state.best_f1 or not cfg.trainer.get("select_on"):
        state.best_f1, state.best_epoch = f1, epoch
        if best is not None:  # the eval splits are scored after the last epoch, with these weights
            if run.is_main:
                best.keep(model, epoch)
            return
        state.best_results = results
        if run.is_main:
            _save(run, model, results, calibration)


def final_evaluation(run: Run, model, best: BestWeights) -> None:
    """``trainer.select_on`` with ``eval_each_epoch=false``, rank 0: put the chosen epoch's weights back into
    ``model``, score every split once with them, and save them as the checkpoint."""
    best.load_into(model)
    results, calibration = score_splits(run, model, run.splits)
    run.state.eval_seconds += sum(r["summary"]["seconds"] for r in results.values())
    run.state.best_results = results
    run.logger.log({k: v for n, r in results.items() for k, v in eval_scalars(n, r["summary"]).items()},
                   step=run.state.step)
    log.info("epoch %d (chosen on %s): %s", run.state.best_epoch, selection_split(run.cfg), _summary_line(results))
    _save(run, model, results, calibration)
