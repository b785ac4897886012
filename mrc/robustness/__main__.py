"""Build a robustness split and write it to a file.

    python -m mrc.robustness build --rule over_stability --src dev.json --out out.json --seed 0

Rules: over_sensitivity (synonym and question-template paraphrases), over_sensitivity_noise (typos,
punctuation and spacing), over_stability (distractor sentences).

The source is read like an evaluation file: a file that is not SQuAD-shaped is an error (exit 2), bad
records (no id, no question, no context, malformed answers, duplicate ids) are skipped and counted, and
every ``answer_start`` written is the answer's position in its context.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mrc.data.squad import DataError, clean_squad, read_json


def builders() -> dict:
    """Rule name -> builder(src_dict, seed) -> (built_dict, counts)."""
    from .over_sensitivity import build_over_sensitivity, build_over_sensitivity_noise
    from .over_stability import build_over_stability

    return {"over_stability": build_over_stability, "over_sensitivity": build_over_sensitivity,
            "over_sensitivity_noise": build_over_sensitivity_noise}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the builder's counts as one JSON line."""
    ap = argparse.ArgumentParser(prog="python -m mrc.robustness", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a split from a SQuAD-format source file")
    b.add_argument("--rule", required=True, choices=sorted(builders()))
    b.add_argument("--src", required=True, type=Path)
    b.add_argument("--out", required=True, type=Path)
    b.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")  # the loader's skip counts
    try:  # the evaluation loader's validation: bad records skipped and counted, answer_start re-located
        src, stats = clean_squad(read_json(args.src), args.src)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    built, counts = builders()[args.rule](src, seed=args.seed)
    counts = {**counts, "source": stats.as_dict()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(built, ensure_ascii=False, indent=1), encoding="utf-8")
    print(json.dumps({"rule": args.rule, "src": str(args.src), "out": str(args.out), **counts}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
