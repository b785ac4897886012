"""CLI: score a prediction file against a SQuAD-format reference file (DuReader/CMRC metric)."""
from __future__ import annotations

import argparse
import json
import sys

from mrc.eval.metric import MetricInputError, describe_notes, evaluate, load_predictions, load_references


def main(argv: list[str] | None = None) -> int:
    """Print one JSON summary line; return 0 on success, 2 on bad input."""
    parser = argparse.ArgumentParser(prog="python -m mrc evaluate", description=__doc__)
    parser.add_argument("reference", help="SQuAD-format reference JSON")
    parser.add_argument("prediction", help="JSON object {id: answer_string}")
    parser.add_argument("--per-question", metavar="OUT.json",
                        help="also write {id: {'f1': .., 'em': ..}} to this file")
    args = parser.parse_args(argv)  # usage errors already exit 2
    try:
        gold = load_references(args.reference)
        preds = load_predictions(args.prediction)
    except MetricInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ids = {q.id for q in gold}
    extra = [qid for qid in preds if qid not in ids]
    if gold and preds and len(extra) == len(preds):
        print(f"error: {args.prediction}: none of its {len(preds)} ids is a question of {args.reference} "
              f"(e.g. {extra[:3]}); are these the predictions for another file?", file=sys.stderr)
        return 2
    if extra:
        print(f"warning: {args.prediction}: {len(extra)} ids are not questions of {args.reference} and are "
              f"ignored (e.g. {extra[:3]})", file=sys.stderr)
    note = describe_notes(gold, args.reference)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    summary, per_question = evaluate(gold, preds)
    if args.per_question:
        try:
            with open(args.per_question, "w", encoding="utf-8") as fh:
                # The file format promises em as an integer 0/1.
                out = {qid: {"f1": s["f1"], "em": int(s["em"])} for qid, s in per_question.items()}
                json.dump(out, fh, ensure_ascii=False)
        except OSError as exc:
            print(f"error: {args.per_question}: cannot write ({exc.strerror})", file=sys.stderr)
            return 2
    print(json.dumps(summary))
    return 0
