"""Over-sensitivity per rewrite rule, paired: each rule's questions before and after the rewrite.

    python experiments/over_sensitivity/paired.py RUN_DIR [RUN_DIR ...] [--json OUT.json]

Reads a finished run dir (``splits/over_sensitivity.json``, ``scores/`` and ``predictions/`` of
``in_domain`` and ``over_sensitivity``). New runs already carry the same table in ``metrics.json``
(``splits.over_sensitivity.paired_by_type``); this recomputes it for runs made before that existed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrc.eval.metric import load_references
from mrc.robustness.over_sensitivity import paired_by_type


def paired(run_dir: Path, original: str = "in_domain", rewritten: str = "over_sensitivity") -> dict:
    def read(kind, split):
        return json.loads((run_dir / kind / f"{split}.json").read_text(encoding="utf-8"))

    types = {q.id: q.qtype for q in load_references(run_dir / "splits" / f"{rewritten}.json")}
    table = paired_by_type(types, read("scores", original), read("scores", rewritten),
                           read("predictions", original), read("predictions", rewritten))
    everything = paired_by_type({i: "all" for i in types}, read("scores", original), read("scores", rewritten),
                                read("predictions", original), read("predictions", rewritten))
    return {**table, **everything}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = {}
    print("| run | rule | questions | F1 before | F1 after | drop | consistency |\n|---|---|---|---|---|---|---|")
    for run in args.runs:
        out[run.name] = paired(run)
        for rule, g in out[run.name].items():
            print(f"| {run.name} | {rule} | {g['TOTAL']} | {g['F1_original']:.2f} | {g['F1']:.2f} | "
                  f"{g['drop']:.2f} | {g['consistency']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
