"""Deterministic synthetic Chinese extractive-QA data (SQuAD format) for the offline demo.

Contexts are short "encyclopedia" paragraphs about made-up people, companies and places.
Every question names one entity and one relation; the same relation is stated for other
entities in the same paragraph (distractors), so the model has to match the entity name.
Dev uses entity names that never occur in train, built from the same character pools.

Besides train/dev it writes two robustness splits (the other three are built from dev by the
builders in mrc.robustness):

* ``generalization``: books and films, relations and phrasing never seen in training;
* ``checklist``: dev-style paragraphs with a ``type`` per question: ``in-domain``, ``paraphrase``
  (held-out question wording) and two unanswerable types (``is_impossible``): ``no_fact`` (the entity
  is in the paragraph, the relation is stated only for others) and ``no_entity`` (the entity is not
  in the paragraph at all).

``null_rate`` adds that share of unanswerable training questions (one per chosen paragraph, drawn
from its own random stream, so the answerable questions stay identical for every rate).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

from mrc.data.demo_relations import (BRAND, CONNECTIVES, FILLERS, GIVEN, HELDOUT_QUESTIONS, KIND_TITLES, PLACE, RELATIONS,
                             SURNAMES, WORK_RELATIONS, WORK_TAILS, Relation, _pick)

VERSION = "demo-2"

KINDS = ("person", "company", "place")
WORK_KINDS = ("book", "film")
_BY_KIND = {k: [n for n, r in RELATIONS.items() if r.kind == k] for k in KINDS}
_WORKS_BY_KIND = {k: [n for n, r in WORK_RELATIONS.items() if r.kind == k] for k in WORK_KINDS}
CHECKLIST_TYPES = ("in-domain", "paraphrase", "no_fact", "no_entity")
CHECKLIST_WEIGHTS = (4, 2, 2, 2)


def is_dev_name(name: str) -> bool:
    """Split rule for entity names: a pure function of the string, so train/dev names are disjoint."""
    return sum((i + 1) * ord(c) for i, c in enumerate(name)) % 5 == 0


def _name(rng: random.Random, kind: str, dev: bool) -> str:
    while True:  # rejection sampling: ~1/5 of names are dev, ~4/5 train
        if kind == "person":
            name = rng.choice(SURNAMES) + _pick(rng, GIVEN, rng.randint(1, 2))
        elif kind == "company":
            name = _pick(rng, BRAND, 2) + rng.choice(["科技", "集团", "公司", "电子", "传媒", "食品"])
        elif kind in WORK_TAILS:
            name = "《" + _pick(rng, PLACE + BRAND, 2) + rng.choice(WORK_TAILS[kind]) + "》"
        else:
            name = _pick(rng, PLACE, 2) + rng.choice("县镇乡村")
        if is_dev_name(name) == dev:
            return name


def _unrelated(a: str, b: str) -> bool:
    return a not in b and b not in a


@dataclass
class Paragraph:
    """One generated paragraph: its facts and the questions chosen for it."""
    kind: str
    context: str
    names: list[str]
    rels: list[str]
    values: dict[tuple[str, str], str]   # (entity, relation) -> value, for the stated facts
    starts: dict[tuple[str, str], int]   # (entity, relation) -> character start of the value
    asked: list[tuple[str, str]]         # (entity, relation) pairs asked about

    def unstated(self) -> list[tuple[str, str]]:
        """(entity, relation) pairs not stated for an entity the paragraph mentions, although the relation
        is stated for another entity."""
        stated, mentioned = {r for _, r in self.values}, {e for e, _ in self.values}
        return [(e, r) for e in self.names for r in self.rels
                if e in mentioned and r in stated and (e, r) not in self.values]


def _paragraph(rng: random.Random, dev: bool, max_q: int, relations: dict[str, Relation] = RELATIONS,
               by_kind: dict[str, list[str]] = _BY_KIND) -> Paragraph:
    """A paragraph with 1..max_q askable facts (each with a same-relation distractor)."""
    while True:  # retries are rare (value collisions); deterministic because they draw from rng
        kind = rng.choice(tuple(by_kind))
        rels = rng.sample(by_kind[kind], rng.randint(3, min(5, len(by_kind[kind]))))
        n_ent, names = rng.randint(3, 6), []
        while len(names) < n_ent:  # no name inside another, so counting a name's occurrences is exact
            name = _name(rng, kind, dev)
            if all(_unrelated(name, o) for o in names):
                names.append(name)
        pairs = [(e, r) for e in names for r in rels]
        rng.shuffle(pairs)
        facts = pairs[:rng.randint(8, 16)]
        values: dict[tuple[str, str], str] = {}
        for fact in facts:
            for _ in range(30):  # redraw values that overlap another value or a name
                v = relations[fact[1]].value(rng)
                if all(_unrelated(v, o) for o in [*values.values(), *names]):
                    break
            values[fact] = v
        items = [(rng.choice(CONNECTIVES), f) for f in facts] + [(s, None) for s in rng.sample(FILLERS, rng.randint(0, 3))]
        rng.shuffle(items)
        context, starts = "", {}
        for prefix, fact in items:
            if fact is None:
                context += prefix
                continue
            head, tail = relations[fact[1]].fact.split("{v}")
            context += prefix + head.format(e=fact[0])
            starts[fact] = len(context)
            context += values[fact] + tail
        per_rel = {r: sum(f[1] == r for f in facts) for r in rels}
        per_ent = {e: sum(f[0] == e for f in facts) for e in names}
        # askable: relation has a distractor, answer string and entity mention are unambiguous
        cands = [f for f in facts if per_rel[f[1]] >= 2 and context.count(values[f]) == 1
                 and context.count(f[0]) == per_ent[f[0]]]
        if len(cands) >= min(2, max_q):
            asked = rng.sample(cands, min(rng.randint(2, 4), len(cands), max_q))
            return Paragraph(kind, context, names, rels, values, starts, asked)


def _qa(qid: str, question: str, rel: str, para: Paragraph | None = None, fact=None, qtype: str | None = None) -> dict:
    """A SQuAD question; unanswerable (``is_impossible``, empty answer list) when ``fact`` is None."""
    answers = [] if fact is None else [{"text": para.values[fact], "answer_start": para.starts[fact]}]
    qa = {"id": qid, "question": question, "answers": answers, "type": qtype or rel}
    if qa["type"] != rel:
        qa["relation"] = rel
    if fact is None:
        qa["is_impossible"] = True
    return qa


def _null_question(rng: random.Random, para: Paragraph, dev: bool, qid: str, qtype: str | None = None) -> dict | None:
    """An unanswerable question about ``para``: an unstated fact (``no_fact``) or an absent entity
    (``no_entity``); ``qtype`` None picks one at random. None when ``para`` allows no such question."""
    templates = {r: RELATIONS[r].questions for r in para.rels}
    if qtype is None:
        qtype = "no_fact" if rng.random() < 0.5 else "no_entity"
    if qtype == "no_fact":
        options = para.unstated()
        if options:
            e, r = rng.choice(options)
            return _qa(qid, rng.choice(templates[r]).format(e=e), r, qtype="no_fact")
        return None
    r = rng.choice(sorted({r for _, r in para.values}))
    for _ in range(30):
        e = _name(rng, para.kind, dev)
        if all(_unrelated(e, n) for n in para.names) and e not in para.context:
            return _qa(qid, rng.choice(templates[r]).format(e=e), r, qtype="no_entity")
    return None


def _split(n: int, seed: int, split: str, null_rate: float = 0.0) -> dict:
    # one stream per split: train does not depend on n_dev, and a smaller n gives a prefix
    rng = random.Random(2 * seed + (split == "dev"))
    null_rng = random.Random(f"null-{seed}-{split}")  # its own stream: answerable questions never change
    data, n_q, n_null = [], 0, 0
    while n_q < n:
        para = _paragraph(rng, split == "dev", n - n_q)
        qas = []
        for e, rel in para.asked:
            qas.append(_qa(f"demo-{split}-{n_q:06d}", rng.choice(RELATIONS[rel].questions).format(e=e), rel,
                           para, (e, rel)))
            n_q += 1
        if null_rate > 0 and null_rng.random() < null_rate:
            qa = _null_question(null_rng, para, split == "dev", f"demo-{split}-null-{n_null:06d}")
            if qa is not None:
                qas.append(qa)
                n_null += 1
        data.append({"title": f"{KIND_TITLES[para.kind]}{len(data):04d}", "paragraphs": [{"context": para.context, "qas": qas}]})
    return {"version": VERSION, "data": data}


def make_demo(n_train: int = 3000, n_dev: int = 400, seed: int = 13, null_rate: float = 0.0) -> tuple[dict, dict]:
    """Return (train_squad, dev_squad) with exactly n_train / n_dev answerable questions, deterministic in seed.

    ``null_rate``: share of training paragraphs that get one extra unanswerable question.
    """
    return _split(n_train, seed, "train", null_rate), _split(n_dev, seed, "dev")


def make_generalization(n: int = 400, seed: int = 13) -> dict:
    """Questions about books and films: relations, phrasings and entity kinds never seen in training."""
    rng = random.Random(f"generalization-{seed}")
    data, n_q = [], 0
    while n_q < n:
        para = _paragraph(rng, True, n - n_q, WORK_RELATIONS, _WORKS_BY_KIND)
        qas = []
        for e, rel in para.asked:
            qas.append(_qa(f"demo-gen-{n_q:06d}", rng.choice(WORK_RELATIONS[rel].questions).format(e=e), rel,
                           para, (e, rel)))
            n_q += 1
        data.append({"title": f"作品介绍{len(data):04d}", "paragraphs": [{"context": para.context, "qas": qas}]})
    return {"version": VERSION, "data": data}


def make_checklist(n: int = 400, seed: int = 13) -> dict:
    """Dev-style paragraphs; each question has a ``type`` from CHECKLIST_TYPES (two are unanswerable)."""
    rng = random.Random(f"checklist-{seed}")
    data, n_q = [], 0
    while n_q < n:
        para = _paragraph(rng, True, n - n_q)
        qas = []
        for e, rel in para.asked:
            qid = f"demo-checklist-{n_q:06d}"
            qtype = rng.choices(CHECKLIST_TYPES, CHECKLIST_WEIGHTS)[0]
            qa = None
            if qtype in ("no_fact", "no_entity"):
                qa = _null_question(rng, para, True, qid, qtype)  # None: falls back to in-domain below
            elif qtype == "paraphrase":
                qa = _qa(qid, HELDOUT_QUESTIONS[rel].format(e=e), rel, para, (e, rel), qtype)
            if qa is None:
                qa = _qa(qid, rng.choice(RELATIONS[rel].questions).format(e=e), rel, para, (e, rel), "in-domain")
            qas.append(qa)
            n_q += 1
        data.append({"title": f"{KIND_TITLES[para.kind]}{len(data):04d}", "paragraphs": [{"context": para.context, "qas": qas}]})
    return {"version": VERSION, "data": data}


def question_entity(qa: dict) -> str:
    """Recover the entity name a generated question asks about (parses its question template)."""
    rel = qa.get("relation", qa["type"])
    relation = RELATIONS.get(rel) or WORK_RELATIONS[rel]
    for tmpl in (*relation.questions, HELDOUT_QUESTIONS.get(rel, "")):
        m = re.fullmatch(re.escape(tmpl).replace(re.escape("{e}"), "(.+)"), qa["question"]) if tmpl else None
        if m:
            return m.group(1)
    raise ValueError(f"not a demo question: {qa['question']!r}")


def _dumps(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def _atomic_write(path: Path, blob: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(blob)
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        tmp.unlink(missing_ok=True)


def write_demo(root, needed=None, *, n_train: int = 3000, n_dev: int = 400, seed: int = 13,
               null_rate: float = 0.0, n_generalization: int = 400, n_checklist: int = 400) -> list[str]:
    """Make root/demo/{train,dev,generalization,checklist}.json match the generators; return the paths written."""
    del needed  # interface compatibility with the other data preparers; every file is always ensured
    out = Path(root) / "demo"
    out.mkdir(parents=True, exist_ok=True)
    meta = {"version": VERSION, "n_train": n_train, "n_dev": n_dev, "seed": seed, "null_rate": null_rate,
            "n_generalization": n_generalization, "n_checklist": n_checklist}
    try:
        old = json.loads((out / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = None
    train, dev = make_demo(n_train, n_dev, seed, null_rate)
    blobs = {"train.json": _dumps(train), "dev.json": _dumps(dev),
             "generalization.json": _dumps(make_generalization(n_generalization, seed)),
             "checklist.json": _dumps(make_checklist(n_checklist, seed))}
    meta["sha256"] = {k: hashlib.sha256(b).hexdigest() for k, b in blobs.items()}
    written = []
    for name, blob in blobs.items():
        path = out / name
        # trust the stored hash only if the file on disk still has it (it may have been edited)
        same = (old or {}).get("sha256", {}).get(name) == meta["sha256"][name] and path.is_file() \
            and hashlib.sha256(path.read_bytes()).hexdigest() == meta["sha256"][name]
        if not same:
            _atomic_write(path, blob)
            written.append(f"demo/{name}")
    if old != meta:
        _atomic_write(out / "meta.json", json.dumps(meta, ensure_ascii=False, indent=1).encode("utf-8"))
        written.append("demo/meta.json")
    return written


def main(argv: list[str] | None = None) -> int:
    """CLI: python -m mrc.data.demo OUT_DIR [--n-train N] [--n-dev N] [--seed S] [--null-rate R] ..."""
    ap = argparse.ArgumentParser(description="Write the synthetic Chinese demo MRC data set (SQuAD format).")
    ap.add_argument("out_dir")
    ap.add_argument("--n-train", type=int, default=3000)
    ap.add_argument("--n-dev", type=int, default=400)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--null-rate", type=float, default=0.0, help="share of training paragraphs with an unanswerable question")
    ap.add_argument("--n-generalization", type=int, default=400)
    ap.add_argument("--n-checklist", type=int, default=400)
    a = ap.parse_args(argv)
    written = write_demo(a.out_dir, n_train=a.n_train, n_dev=a.n_dev, seed=a.seed, null_rate=a.null_rate,
                         n_generalization=a.n_generalization, n_checklist=a.n_checklist)
    print("\n".join(written) if written else "demo data already up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
