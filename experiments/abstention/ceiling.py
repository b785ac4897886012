"""How far can any null decision over one model's scores go on checklist? Ceilings measured *on* checklist (oracles,
never a result to report as one), to tell a bad threshold from a score that cannot tell the questions apart.

    python experiments/abstention/ceiling.py RUN_DIR OUT_DIR

Scores the run's calibration slice, in-domain and checklist splits from its checkpoint (every answer kept: no null
threshold), then writes OUT_DIR/ceiling.json with, per split holding both kinds of question:
- the AUROC with which the null margin (best span score − null score) separates answerable from unanswerable
  questions, and that of one model-free signal: the share of the question's content characters found in the context;
- the checklist F1 of the best threshold on the margin chosen on checklist itself (an oracle);
- the checklist F1 of a logistic regression over the margin and the lexical signal, fitted on checklist by 5-fold
  cross-validation with its threshold chosen on checklist (an oracle calibrator);
- the checklist F1 of a perfect abstainer over the same answers (unanswerable: "", answerable: the model's answer),
  and of never answering.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mrc.data.features import Geometry, build_windows
from mrc.eval.metric import score_question
from mrc.eval.scoring import evaluate_split
from mrc.model import checkpoint
from mrc.train.inputs import load_data
from mrc.train.outputs import write_json

# characters that say what kind of question it is rather than what it is about
FUNCTION_CHARS = set("的了吗呢吧啊是在有和与及或什么怎么怎样如何哪里哪个哪些几多少为什么谁么呀一个这那请问知道可以能会要")


def lexical_support(question: str, context: str) -> float:
    """Share of the question's content characters (CJK, function characters left out) that occur in the context."""
    chars = [c for c in question if "\u4e00" <= c <= "\u9fff" and c not in FUNCTION_CHARS]
    return float(np.mean([c in context for c in chars])) if chars else 1.0


def rows(split, nbest: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(margin, lexical support, F1 of answering / of abstaining) per question of ``split``."""
    gold = {g.id: g for g in split.gold}
    margin, lexical, f1 = [], [], []
    for ex in split.examples:
        entry = nbest[ex.id]
        best = entry["candidates"][0] if entry["candidates"] else None
        margin.append(best["score"] - entry["null_score"] if best else -1e9)
        lexical.append(lexical_support(ex.question, ex.context))
        f1.append((score_question(best["text"] if best else "", gold[ex.id])[0], score_question("", gold[ex.id])[0]))
    return np.array(margin), np.array(lexical), np.array(f1)


def best_threshold_f1(score: np.ndarray, f1: np.ndarray) -> float:
    """100 x the best mean F1 over thresholds on ``score`` (answer where score >= threshold)."""
    return 100 * max(np.mean(np.where(score >= t, f1[:, 0], f1[:, 1])) for t in np.unique(score))


def ceilings(margin: np.ndarray, lexical: np.ndarray, f1: np.ndarray) -> dict:
    answerable = f1[:, 1] == 0
    out = {"questions": int(len(f1)), "answerable": int(answerable.sum()),
           "auroc_margin": round(float(roc_auc_score(answerable, margin)), 4),
           "auroc_lexical_support": round(float(roc_auc_score(answerable, lexical)), 4),
           "f1_always_answer": round(100 * float(f1[:, 0].mean()), 2),
           "f1_never_answer": round(100 * float(f1[:, 1].mean()), 2),
           "f1_perfect_abstainer": round(100 * float(np.where(answerable, f1[:, 0], f1[:, 1]).mean()), 2),
           "f1_oracle_margin_threshold": round(best_threshold_f1(margin, f1), 2)}
    features = np.column_stack([margin, lexical])
    target = (f1[:, 0] > f1[:, 1]).astype(int)
    p = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), features, target, cv=5,
                          method="predict_proba")[:, 1]
    out["auroc_oracle_calibrator"] = round(float(roc_auc_score(answerable, p)), 4)
    out["f1_oracle_calibrator"] = round(best_threshold_f1(np.round(p, 3), f1), 2)
    return out


def main(run: Path, out: Path) -> None:
    cfg = OmegaConf.load(run / "config.yaml")
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(["decode.null_threshold=null",
                                                      "data.eval_splits=[in_domain,checklist]"]))
    cfg.trainer.progress = False
    model, tokenizer, _ = checkpoint.load(run / "checkpoint")
    _, _, _, splits = load_data(cfg, out)
    report = {"run": str(run)}
    for name, split in splits.items():
        split.windows, _ = build_windows(split.examples, tokenizer, Geometry.of(cfg.data), training=False)
        with torch.inference_mode():
            result = evaluate_split(model, split, cfg.decode, batch_size=cfg.trainer.eval_batch_size, device="cpu",
                                    pad_id=tokenizer.pad_token_id)
        margin, lexical, f1 = rows(split, result["nbest"])
        report[name] = ceilings(margin, lexical, f1) if (f1[:, 1] == 1).any() else {
            "questions": int(len(f1)), "f1_always_answer": round(100 * float(f1[:, 0].mean()), 2)}
        print(name, json.dumps(report[name]), flush=True)
    write_json(out / "ceiling.json", report)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
