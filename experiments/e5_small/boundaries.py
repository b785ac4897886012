"""Answers on token boundaries and the oracle F1/EM of e5_small's tokenizer, with and without split_cjk.

    python experiments/e5_small/boundaries.py [--data ../shared/data] [--encoder outputs/e5_small] [--out boundaries.json]

For every gold answer of DuReader-robust dev (all 1,417 questions; ``answer_start`` re-located by the
loader) and of its cpu_small in-domain half: whether the answer starts and ends on token boundaries, and
the oracle prediction: the gold's covering token span mapped back to text through the offsets, the best
gold per question, scored with the official metric. The oracle is the ceiling a span model can reach.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mrc.data.features import clean_offsets, token_span
from mrc.data.squad import load_squad
from mrc.data.subsets import in_eval_part
from mrc.eval.metric import evaluate, load_references
from mrc.model.encoder import local_build, split_cjk_words


def measure(examples, gold, tokenizer) -> dict:
    """Boundary share over gold answers and oracle F1/EM over questions."""
    contexts = list(dict.fromkeys(e.context for e in examples))
    enc = tokenizer(contexts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offs = {c: clean_offsets(c, np.asarray(o, np.int64).reshape(-1, 2)) for c, o in zip(contexts, enc["offset_mapping"])}
    on, total, preds = 0, 0, {}
    for e in examples:
        o = offs[e.context]
        best = None
        for a, s in zip(e.answers, e.starts):
            ts, te = token_span(o, s, s + len(a))
            total += 1
            if ts < 0:
                continue
            on += int(o[ts, 0] == s and o[te, 1] == s + len(a))
            text = e.context[o[ts, 0]:o[te, 1]]
            best = text if best is None or len(text) < len(best) else best
        preds[e.id] = best or ""
    ids = {e.id for e in examples}
    summary, _ = evaluate([g for g in gold if g.id in ids], preds)
    return {"answers": total, "on_boundaries": on, "share": round(on / total, 4), "oracle_f1": summary["F1"],
            "oracle_em": summary["EM"], "questions": len(ids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--encoder", default="outputs/e5_small")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    path = Path(args.data) / "dureader_robust" / "dev.json"
    examples, _ = load_squad(path, training=True)
    gold = load_references(path)
    base = local_build(args.encoder, build="python -m mrc e5 --out " + args.encoder).tokenizer
    halves = {"dev (1,417)": examples,
              "cpu_small in_domain half": [e for e in examples if in_eval_part(e.id, 0.5, "cpu_small")]}
    result = {}
    for mode, tok in (("default", base), ("split_cjk", split_cjk_words(base))):
        for name, exs in halves.items():
            result[f"{mode} / {name}"] = measure(exs, gold, tok)
            print(mode, name, result[f"{mode} / {name}"])
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
