"""Non-neural floor for any experiment: answer with the context window that shares the most
characters with the question.

    python -m mrc lexical experiment=cpu_small [lexical.width=10] [other overrides]

Reads the same data config as ``run.py`` (same splits, built the same way), trains nothing, and writes
a run dir that ``mrc.report`` reads beside the learned runs: metrics.json, predictions/, scores/, and
``head=lexical`` appended to ``.hydra/overrides.yaml`` so the report lists it as one more "head".
A window's score is the number of its characters that occur in the question (punctuation and the
commonest function characters of questions excluded); ties go to the earliest window.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import numpy as np
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mrc.eval.metric import normalize

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the same config tree as run.py
log = logging.getLogger(__name__)
# characters every question has and answers rarely share: question words, particles, punctuation
QUESTION_CHARS = set("的是了吗呢吧啊什么哪几多少谁怎样为何时候个一有在")
DEFAULT_WIDTH = 10  # as conf/config.yaml lexical.width


def best_window(question: str, context: str, width: int = DEFAULT_WIDTH) -> str:
    """The ``width``-character window of ``context`` with the most characters found in ``question``."""
    if not context:
        return ""
    keys = set(normalize(question)) - QUESTION_CHARS
    hits = np.fromiter((c in keys for c in context.lower()), dtype=np.int32, count=len(context))
    width = max(1, min(width, len(context)))
    sums = np.convolve(hits, np.ones(width, dtype=np.int32), mode="valid")  # sums[i] = hits[i:i+width].sum()
    start = int(np.argmax(sums))  # first maximum: ties go to the earliest window
    return context[start:start + width]


def predict(examples, width: int = DEFAULT_WIDTH) -> dict[str, str]:
    """Predictions for every example."""
    return {e.id: best_window(e.question, e.context, width) for e in examples}


def run(cfg: DictConfig, run_dir: Path) -> float:
    """Evaluate the lexical baseline on every split of ``cfg.data``; returns in-domain F1."""
    from mrc.train.inputs import load_data
    from mrc.eval.scoring import score
    from mrc.train.outputs import write_json

    width = int(cfg.lexical.width)
    _, _, _, splits = load_data(cfg, run_dir)
    results = {}
    for name, split in splits.items():
        t0 = time.perf_counter()
        preds = predict(split.examples, width)
        summary, per_q = score(split, preds)
        seconds = time.perf_counter() - t0
        summary.update(seconds=round(seconds, 3), examples_per_s=round(len(split.examples) / max(seconds, 1e-9), 2))
        results[name] = summary
        write_json(run_dir / "predictions" / f"{name}.json", preds)
        write_json(run_dir / "scores" / f"{name}.json", per_q)
        log.info("lexical baseline (width %d) on %s: F1 %.3f EM %.3f", width, name, summary["F1"], summary["EM"])
    write_json(run_dir / "metrics.json", {"in_domain": cfg.data.in_domain, "splits": results,
                                          "baseline": {"name": "lexical", "width": width}})
    return float(results[cfg.data.in_domain]["F1"])


def _mark_as_head(run_dir: Path) -> None:
    overrides = run_dir / ".hydra" / "overrides.yaml"
    if overrides.is_file():
        items = [o for o in (yaml.safe_load(overrides.read_text(encoding="utf-8")) or []) if not o.startswith("head=")]
        overrides.write_text(yaml.safe_dump(items + ["head=lexical"], allow_unicode=True), encoding="utf-8")


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry point (same config tree as run.py)."""
    from mrc.errors import exit_on_user_error
    from mrc.train.record import hydra_record, write_record

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_record(run_dir, cfg, hydra_record(cfg))
    _mark_as_head(run_dir)
    return exit_on_user_error(lambda: run(cfg, run_dir), debug=bool(HydraConfig.get().verbose))
