"""Over-sensitivity per rewrite rule, paired: each rule's questions before and after the rewrite.

    python experiments/over_sensitivity/paired.py RUN_DIR [RUN_DIR ...] [--json OUT.json] [--bootstrap 2000]

Reads a finished run dir (``splits/over_sensitivity.json``, ``scores/`` and ``predictions/`` of
``in_domain`` and ``over_sensitivity``). New runs already carry the same table in ``metrics.json``
(``splits.over_sensitivity.paired_by_type``); this recomputes it for runs made before that existed, and adds
per rule the drop's 95 % paired-bootstrap CI and p-value over the rule's questions (``mrc.report.stats``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from mrc.eval.metric import load_references
from mrc.report.stats import paired_bootstrap
from mrc.robustness.over_sensitivity import paired_by_type


def paired(run_dir: Path, original: str = "in_domain", rewritten: str = "over_sensitivity",
           bootstrap: int = 2000) -> dict:
    def read(kind, split):
        return json.loads((run_dir / kind / f"{split}.json").read_text(encoding="utf-8"))

    types = {q.id: q.qtype for q in load_references(run_dir / "splits" / f"{rewritten}.json")}
    before, after = read("scores", original), read("scores", rewritten)
    table = paired_by_type(types, before, after, read("predictions", original), read("predictions", rewritten))
    everything = paired_by_type({i: "all" for i in types}, before, after,
                                read("predictions", original), read("predictions", rewritten))
    out = {**table, **everything}
    for rule, g in out.items():  # the drop's CI over the rule's questions (points, like the drop)
        ids = [i for i, t in types.items() if (rule == "all" or t == rule) and i in before and i in after]
        b = paired_bootstrap([100.0 * (before[i]["f1"] - after[i]["f1"]) for i in ids], bootstrap)
        g.update(drop_ci=[round(b.ci_low, 3), round(b.ci_high, 3)], p_bootstrap=round(b.p_value, 4))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--bootstrap", type=int, default=2000, help="paired-bootstrap resamples (default 2000)")
    args = ap.parse_args(argv)
    out = {}
    print("| run | rule | questions | F1 before | F1 after | drop [95 % CI] | p (bootstrap) | consistency |\n"
          "|---|---|---|---|---|---|---|---|")
    for run in args.runs:
        out[run.name] = paired(run, bootstrap=args.bootstrap)
        for rule, g in out[run.name].items():
            lo, hi = g["drop_ci"]
            print(f"| {run.name} | {rule} | {g['TOTAL']} | {g['F1_original']:.2f} | {g['F1']:.2f} | "
                  f"{g['drop']:.2f} [{lo:.2f}, {hi:.2f}] | {g['p_bootstrap']:.4f} | {g['consistency']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
