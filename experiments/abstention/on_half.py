"""Checklist F1 (HasAns / NoAns) of runs scored on all of DuReader-checklist dev, restricted to the held-out half
that `data=cpu_small_checklist_half` scores, so that they compare with runs of that protocol on the same questions.

    python experiments/abstention/on_half.py CHECKLIST_DEV.json RUN_OR_RECORD [RUN_OR_RECORD ...]

Each RUN_OR_RECORD is a run directory or a record (``scores/checklist.json`` or ``.tsv``); questions are paired by
:func:`mrc.report.records.question_key`. The half is the one the protocol's config builds (``hash_subset``, part
``eval``, share 0.5, salt ``cpu_small``). Prints one line per run, then never answering on the same questions.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def held_out_half(dev: Path) -> dict[str, bool]:
    """{question key: answerable} of the checklist questions the checklist-half protocol scores."""
    from mrc.data.subsets import hash_subset
    from mrc.report.records import question_key

    half, _ = hash_subset(json.loads(dev.read_text(encoding="utf-8")), "eval", 0.5, "cpu_small")
    return {question_key(q["id"]): bool(q["answers"]) and not q.get("is_impossible", False)
            for a in half["data"] for p in a["paragraphs"] for q in p["qas"]}


def f1_on(scores: dict[str, float], keys: dict[str, bool]) -> dict:
    """F1, HasAns F1 and NoAns F1 (x100) over ``keys``; every key must be scored."""
    missing = [k for k in keys if k not in scores]
    if missing:
        raise SystemExit(f"error: {len(missing)} of the {len(keys)} held-out questions are not scored")

    def mean(ks):
        return round(100 * sum(scores[k] for k in ks) / len(ks), 2) if ks else None

    has = [k for k, a in keys.items() if a]
    return {"questions": len(keys), "F1": mean(list(keys)), "HasAns_F1": mean(has),
            "NoAns_F1": mean([k for k, a in keys.items() if not a])}


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    from mrc.report.records import read_scores

    keys = held_out_half(Path(argv[0]))
    for run in map(Path, argv[1:]):
        found = [run / "scores" / f"checklist{s}" for s in (".json", ".tsv") if (run / "scores" / f"checklist{s}").exists()]
        if not found:
            raise SystemExit(f"error: {run} has no scores/checklist.json or .tsv")
        print(json.dumps({"run": str(run), **f1_on(read_scores(found[0]), keys)}, ensure_ascii=False))
    never = {k: 0.0 if a else 1.0 for k, a in keys.items()}
    print(json.dumps({"run": "never answer", **f1_on(never, keys)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
