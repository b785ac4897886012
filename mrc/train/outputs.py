"""What a run writes after its best epoch: predictions, per-question scores, error rows and ``metrics.json``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from mrc.eval.split import Split

log = logging.getLogger(__name__)


def write_json(path: Path, obj) -> None:
    """UTF-8 JSON, human-readable Chinese."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def snippet(context: str, text: str, start: int | None = None, width: int = 30) -> str:
    """Context around ``text`` (at ``start`` or its first occurrence), the text marked with 【】."""
    pos = context.find(text) if start is None or start < 0 else start
    if not text or pos < 0:
        return ""
    return (context[max(pos - width, 0):pos] + "【" + text + "】" +
            context[pos + len(text):pos + len(text) + width])


def error_rows(split: Split, predictions: dict, per_question: dict) -> list[dict]:
    """One row per question whose prediction is not an exact match (error analysis)."""
    rows = []
    for ex in split.examples:
        if per_question.get(ex.id, {}).get("em", 0) >= 1:
            continue
        pred = predictions.get(ex.id, "")
        gold = ex.references[0] if ex.references else ""
        rows.append({"id": ex.id, "type": ex.qtype, "question": ex.question, "gold": ex.references,
                     "predicted": pred, "f1": per_question.get(ex.id, {}).get("f1", 0.0),
                     "gold_context": snippet(ex.context, gold, ex.starts[0] if ex.starts else None),
                     "predicted_context": snippet(ex.context, pred)})
    return rows


def write_outputs(run_dir: Path, results: dict, metrics: dict, cfg, logger, splits: dict) -> None:
    """Per split: ``errors/``, ``predictions/`` (+ n-best), ``scores/``, ``confidence/``; then ``metrics.json`` and the
    logger summary."""
    pred_files = []
    for name, r in results.items():
        rows = error_rows(splits[name], r["predictions"], r["per_question"])
        (run_dir / "errors").mkdir(parents=True, exist_ok=True)
        (run_dir / "errors" / f"{name}.jsonl").write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        write_json(run_dir / "predictions" / f"{name}.json", r["predictions"])
        write_json(run_dir / "scores" / f"{name}.json", r["per_question"])
        if r.get("confidence"):  # per method, each question's confidence in its returned answer
            write_json(run_dir / "confidence" / f"{name}.json", r["confidence"])
        pred_files.append(run_dir / "predictions" / f"{name}.json")
        if cfg.decode.save_nbest:
            write_json(run_dir / "predictions" / f"{name}.nbest.json", r["nbest"])
    write_json(run_dir / "metrics.json", metrics)
    logger.summary({f"final/{n}/{k.lower()}": s[k] for n, s in metrics["splits"].items() for k in ("F1", "EM")}
                   | {"best_epoch": metrics["best_epoch"]})
    logger.artifact("predictions", "predictions", pred_files)
    log.info("wrote %s", run_dir / "metrics.json")
