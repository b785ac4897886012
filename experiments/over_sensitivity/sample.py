"""Draw the hand-check sample of issue 19: 100 random rewrites of DuReader-robust dev (fixed seed).

    python experiments/over_sensitivity/sample.py ../shared/data/dureader_robust/dev.json

Writes ``sample.tsv`` beside this file (id, rule, original, rewrite, same_meaning, fluent, note) and prints
the rule counts over the whole file. Judgments already in ``sample.tsv`` for the same id and the same
rewrite are kept; a rewrite that changed is left blank, to be read again.
"""
import csv
import json
import random
import sys
from pathlib import Path

from mrc.data.squad import clean_squad, read_json
from mrc.robustness.over_sensitivity import build_over_sensitivity

OUT = Path(__file__).with_name("sample.tsv")
FIELDS = ["id", "rule", "original", "rewrite", "same_meaning", "fluent", "note"]


def main(src: str, n: int = 100, seed: int = 0) -> None:
    data, _ = clean_squad(read_json(Path(src)), Path(src))
    built, counts = build_over_sensitivity(data, seed=0)
    qas = [qa for a in built["data"] for p in a["paragraphs"] for qa in p["qas"]]
    # A fixed random order of all questions, then the first n that were rewritten: a rule change moves only
    # the rows it touches, so earlier judgments stay valid for the rest.
    order = random.Random(seed).sample(sorted(qas, key=lambda qa: qa["id"]), len(qas))
    sample = [qa for qa in order if qa["rule"] != "unchanged"][:n]
    old = {}
    if OUT.exists():
        with OUT.open(encoding="utf-8") as f:
            old = {(r["id"], r["rewrite"]): r for r in csv.DictReader(f, delimiter="\t")}
    with OUT.open("w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, FIELDS, delimiter="\t", lineterminator="\n")
        w.writeheader()
        for qa in sample:
            prev = old.get((qa["id"], qa["question"]), {})
            w.writerow({"id": qa["id"], "rule": qa["rule"], "original": qa["original_question"],
                        "rewrite": qa["question"], **{k: prev.get(k, "") for k in FIELDS[4:]}})
    print(json.dumps(counts, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
