"""Score a finished run's calibration and pool splits again from its checkpoint with the current abstention code.

    python experiments/abstention/rescore.py RUN_DIR OUT_DIR [KEY=VALUE ...]   (e.g. decode.null_threshold=null)

Writes OUT_DIR/{metrics.json, scores/, confidence/, splits/} like a run would (``python -m mrc.report.abstention
OUT_DIR`` reads it), for runs that finished before runs wrote ``confidence/<split>.json`` and
``checkpoint/calibration.json``. The calibrators are fitted on the run's calibration split only, as in a run.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mrc.data.features import build_windows
from mrc.eval.selective import add_confidences, pool_summary
from mrc.model import checkpoint
from mrc.train.inputs import load_data
from mrc.train.outputs import write_json
from mrc.train.pipeline import evaluate_split, retune_nulls


def main(run: Path, out: Path, overrides: list[str]) -> None:
    cfg = OmegaConf.load(run / "config.yaml")  # the run's own resolved record
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))  # e.g. always answer: decode.null_threshold=null
    pool = list(cfg.decode.abstention_pool)
    cfg.data.eval_splits = [n for n in (cfg.data.get("eval_splits") or pool) if n != "calibration"]
    cfg.trainer.progress = False
    model, tokenizer, _ = checkpoint.load(run / "checkpoint")
    _, _, _, splits = load_data(cfg, out)
    geometry = {k: cfg.data[k] for k in ("max_len", "max_query_len", "doc_stride")}
    for s in splits.values():
        s.windows, _ = build_windows(s.examples, tokenizer, training=False, **geometry)
    with torch.inference_mode():
        results = {n: evaluate_split(model, s, cfg, "cpu", tokenizer.pad_token_id, None) for n, s in splits.items()}
    if cfg.decode.null_threshold == "tune":
        retune_nulls(results, splits, cfg.decode.tune_on)
    calibration = add_confidences(results, splits)
    metrics = {"rescored_from": str(run), "splits": {n: r["summary"] for n, r in results.items()},
               "abstention": pool_summary(results, splits, pool, cfg.seed), "calibration": calibration}
    for name, r in results.items():
        write_json(out / "scores" / f"{name}.json", r["per_question"])
        write_json(out / "confidence" / f"{name}.json", r["confidence"])
    write_json(out / "metrics.json", metrics)
    print(json.dumps({n: {"F1": s["F1"], "null_threshold": s.get("null_threshold")}
                      for n, s in metrics["splits"].items()}, ensure_ascii=False))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
