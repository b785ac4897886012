"""Score a finished run's calibration and pool splits again from its checkpoint with the current abstention code.

    python experiments/abstention/rescore.py RUN_DIR OUT_DIR [KEY=VALUE ...]   (e.g. decode.null_threshold=null)

Writes OUT_DIR/{metrics.json, scores/, confidence/, splits/} like a run would (``python -m mrc abstention
OUT_DIR`` reads it), for runs that finished before runs wrote ``confidence/<split>.json`` and
``checkpoint/calibration.json``. The calibrators are fitted on the run's calibration split only, as in a run.

Also OUT_DIR/decisions.json: every split's F1 (HasAns / NoAns) under each null decision of the same n-best
lists — always answer, threshold 0, the threshold maximising the calibration split's F1, and the thresholds
that cost the calibration split's answerable questions at most 0.5 / 1 / 2 / 3 / 5 F1 points
(``decode.tune_for=answerable_loss``). Every threshold is chosen on the calibration split only.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mrc.data.features import Geometry, build_windows
from mrc.eval.nulls import apply_threshold, tune_threshold, tune_threshold_for_loss
from mrc.eval.selective import add_confidences, pool_summary
from mrc.model import checkpoint
from mrc.train.inputs import load_data
from mrc.train.outputs import write_json
from mrc.eval.scoring import evaluate_split, retune_nulls, score

BUDGETS = (0.5, 1.0, 2.0, 3.0, 5.0)


def decisions(results: dict, splits: dict) -> dict:
    """F1 per split (and HasAns / NoAns F1 where a split has both) under each null decision, thresholds
    chosen on the calibration split."""
    cal = results["calibration"]["nbest"], splits["calibration"].gold
    rules = {"always answer": None, "threshold 0": 0.0, "calibration F1": tune_threshold(*cal)[0]}
    rules.update({f"answerable loss <= {b:g}": tune_threshold_for_loss(*cal, b)[0] for b in BUDGETS})
    out = {}
    for rule, threshold in rules.items():
        row = {"null_threshold": threshold}
        for name, r in results.items():
            summary, _ = score(splits[name], apply_threshold(r["nbest"], threshold))
            row[name] = {k: summary[k] if k == "F1" else summary[k]["F1"]
                         for k in ("F1", "HasAns", "NoAns") if k in summary}
        out[rule] = row
    return out


def main(run: Path, out: Path, overrides: list[str]) -> None:
    cfg = OmegaConf.load(run / "config.yaml")  # the run's own resolved record
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))  # e.g. always answer: decode.null_threshold=null
    pool = list(cfg.decode.abstention_pool)
    cfg.data.eval_splits = [n for n in (cfg.data.get("eval_splits") or pool) if n != "calibration"]
    cfg.trainer.progress = False
    model, tokenizer, _ = checkpoint.load(run / "checkpoint")
    _, _, _, splits = load_data(cfg, out)
    for s in splits.values():
        s.windows, _ = build_windows(s.examples, tokenizer, Geometry.of(cfg.data), training=False)
    with torch.inference_mode():
        results = {n: evaluate_split(model, s, cfg.decode, batch_size=cfg.trainer.eval_batch_size, device="cpu",
                                     pad_id=tokenizer.pad_token_id) for n, s in splits.items()}
    table = decisions(results, splits) if "calibration" in results else None
    if cfg.decode.null_threshold == "tune":
        retune_nulls(results, splits, cfg.decode.tune_on, cfg.decode.get("tune_for", "f1"),
                     cfg.decode.get("answerable_loss", 1.0))
    calibration = add_confidences(results, splits)
    metrics = {"rescored_from": str(run), "splits": {n: r["summary"] for n, r in results.items()},
               "abstention": pool_summary(results, splits, pool, cfg.seed), "calibration": calibration}
    for name, r in results.items():
        write_json(out / "scores" / f"{name}.json", r["per_question"])
        write_json(out / "confidence" / f"{name}.json", r["confidence"])
    write_json(out / "metrics.json", metrics)
    if table is not None:
        write_json(out / "decisions.json", table)
        for rule, row in table.items():
            print(rule, {n: v for n, v in row.items()}, file=sys.stderr)
    print(json.dumps({n: {"F1": s["F1"], "null_threshold": s.get("null_threshold")}
                      for n, s in metrics["splits"].items()}, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
