"""Tests for the synthetic demo data set (mrc/data/demo.py)."""
import json
import re
import statistics
import time

import pytest

from mrc.data.squad import load_squad
from mrc.data.demo import (CHECKLIST_TYPES, HELDOUT_QUESTIONS, RELATIONS, WORK_RELATIONS, is_dev_name, main,
                            make_checklist, make_demo, make_generalization, question_entity, write_demo)
from mrc.eval.metric import load_references

CJK = re.compile(r"^[\u4e00-\u9fff]+$")


def _qas(squad):
    return [(p["context"], qa) for art in squad["data"] for p in art["paragraphs"] for qa in p["qas"]]


@pytest.fixture(scope="module")
def default():
    return make_demo()


def test_default_sizes_are_fast():
    t0 = time.perf_counter()
    make_demo(3000, 400, 13)
    assert time.perf_counter() - t0 < 2.0


def test_deterministic_and_seed_sensitive():
    a = json.dumps(make_demo(200, 50, 7), ensure_ascii=False)
    assert a == json.dumps(make_demo(200, 50, 7), ensure_ascii=False)
    assert a != json.dumps(make_demo(200, 50, 8), ensure_ascii=False)


def test_train_independent_of_dev_size_and_prefix_stable():
    small, _ = make_demo(50, 1, 3)
    big, _ = make_demo(100, 30, 3)
    assert [qa["question"] for _, qa in _qas(small)] == [qa["question"] for _, qa in _qas(big)][:50]


@pytest.mark.parametrize("n_train,n_dev", [(1, 1), (2, 3), (7, 5), (101, 0)])
def test_exact_counts_small(n_train, n_dev):
    train, dev = make_demo(n_train, n_dev, 1)
    assert len(_qas(train)) == n_train and len(_qas(dev)) == n_dev


def test_exact_counts_ids_and_format(default):
    train, dev = default
    for split, squad, n in [("train", train, 3000), ("dev", dev, 400)]:
        qas = _qas(squad)
        assert len(qas) == n and squad["version"] == "demo-2"
        assert [qa["id"] for _, qa in qas] == [f"demo-{split}-{i:06d}" for i in range(n)]
        for art in squad["data"]:
            assert art["title"] and len(art["paragraphs"]) == 1
        for _, qa in qas:
            assert set(qa) == {"id", "question", "answers", "type"} and qa["type"] in RELATIONS
            assert len(qa["answers"]) == 1 and set(qa["answers"][0]) == {"text", "answer_start"}


def test_answers_located_unique_and_fact_stated_once(default):
    for squad in default:
        for ctx, qa in _qas(squad):
            text, start = qa["answers"][0]["text"], qa["answers"][0]["answer_start"]
            assert ctx[start:start + len(text)] == text
            assert ctx.count(text) == 1, (text, ctx)
            ent = question_entity(qa)
            assert ent in qa["question"] and ent in ctx
            # the (entity, relation) fact appears exactly once and it is the one holding the answer
            key = ent + RELATIONS[qa["type"]].stem
            assert ctx.count(key) == 1
            assert ctx.index(key) + len(key) == start


def test_dev_entities_are_new(default):
    train, dev = default
    train_names = {question_entity(qa) for _, qa in _qas(train)}
    dev_names = {question_entity(qa) for _, qa in _qas(dev)}
    assert train_names and dev_names and not (train_names & dev_names)
    assert not any(is_dev_name(n) for n in train_names) and all(is_dev_name(n) for n in dev_names)
    # no dev name of 3+ chars is mentioned anywhere in train, distractors included (a 2-char
    # person name like 宋晓 may legitimately be a prefix of a train name like 宋晓明)
    train_text = "".join(ctx for ctx, _ in _qas(train))
    assert not any(n in train_text for n in dev_names if len(n) >= 3)
    assert len(train_names) > 1000  # many names: the model cannot memorise entity -> value


def test_value_mix_and_length_range(default):
    answers = [qa["answers"][0]["text"] for squad in default for _, qa in _qas(squad)]
    n = len(answers)
    assert sum(bool(re.search(r"[A-Za-z]", a)) for a in answers) > 0.05 * n
    assert sum(bool(re.search(r"[0-9０-９]", a)) for a in answers) > 0.2 * n
    assert sum(bool(re.search(r"[０-９]", a)) for a in answers) > 0.005 * n  # some full-width digits
    assert sum(bool(CJK.match(a)) for a in answers) > 0.2 * n
    assert sum(" " in a for a in answers) > 0.005 * n
    assert sum("，" in a for a in answers) > 0.01 * n
    lengths = {len(a) for a in answers}
    assert min(lengths) == 2 and max(lengths) <= 16 and set(range(2, 13)) <= lengths
    # all relation types are asked about
    assert {qa["type"] for squad in default for _, qa in _qas(squad)} == set(RELATIONS)


def test_context_lengths_and_distractors(default):
    train, dev = default
    for squad in default:
        contexts = [p["context"] for art in squad["data"] for p in art["paragraphs"]]
        assert statistics.median(len(c) for c in contexts) >= 250
        assert max(len(c) for c in contexts) <= 700
        qas = _qas(squad)
        with_distractor = sum(ctx.count(RELATIONS[qa["type"]].stem) >= 2 for ctx, qa in qas)
        assert with_distractor >= 0.9 * len(qas)
        # several entities per context
        assert statistics.median(len(p["qas"]) for art in squad["data"] for p in art["paragraphs"]) >= 2


def test_questions_are_paraphrased(default):
    train, _ = default
    used = {}
    for _, qa in _qas(train):
        ent = question_entity(qa)
        used.setdefault(qa["type"], set()).add(qa["question"].replace(ent, "{e}"))
    assert all(used[t] == set(RELATIONS[t].questions) for t in RELATIONS)


def test_question_entity_rejects_foreign_question():
    with pytest.raises(ValueError):
        question_entity({"type": "height", "question": "今天天气怎么样？"})


def test_write_demo_idempotent_and_rewrites(tmp_path):
    kw = dict(n_train=40, n_dev=10, seed=5)
    written = write_demo(tmp_path, ["demo/train.json"], **kw)
    assert written == ["demo/train.json", "demo/dev.json", "demo/generalization.json", "demo/checklist.json",
                       "demo/meta.json"]
    d = tmp_path / "demo"
    train, dev = make_demo(40, 10, 5)
    assert json.loads((d / "train.json").read_text(encoding="utf-8")) == train
    assert json.loads((d / "dev.json").read_text(encoding="utf-8")) == dev
    assert "\\u" not in (d / "train.json").read_text(encoding="utf-8")  # ensure_ascii=False
    meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
    assert (meta["n_train"], meta["n_dev"], meta["seed"]) == (40, 10, 5)
    mtimes = {p.name: p.stat().st_mtime_ns for p in d.iterdir()}

    assert write_demo(tmp_path, **kw) == []
    assert {p.name: p.stat().st_mtime_ns for p in d.iterdir()} == mtimes
    assert sorted(p.name for p in d.iterdir()) == ["checklist.json", "dev.json", "generalization.json", "meta.json",
                                                   "train.json"]  # no tmp leftovers

    # train does not depend on n_dev, so only dev (and meta) change
    assert write_demo(tmp_path, n_train=40, n_dev=11, seed=5) == ["demo/dev.json", "demo/meta.json"]
    assert len(_qas(json.loads((d / "dev.json").read_text(encoding="utf-8")))) == 11
    assert write_demo(tmp_path, n_train=40, n_dev=11, seed=6) == ["demo/train.json", "demo/dev.json",
                                                                  "demo/generalization.json", "demo/checklist.json",
                                                                  "demo/meta.json"]
    # null_rate changes train only
    assert write_demo(tmp_path, n_train=40, n_dev=11, seed=6, null_rate=0.5) == ["demo/train.json", "demo/meta.json"]

    # a file edited by hand is detected and restored
    (d / "train.json").write_text("{}", encoding="utf-8")
    assert write_demo(tmp_path, n_train=40, n_dev=11, seed=6, null_rate=0.5) == ["demo/train.json"]
    assert json.loads((d / "train.json").read_text(encoding="utf-8")) == make_demo(40, 11, 6, 0.5)[0]


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path), "--n-train", "12", "--n-dev", "4", "--seed", "2"]) == 0
    assert "demo/train.json" in capsys.readouterr().out
    assert len(_qas(json.loads((tmp_path / "demo" / "dev.json").read_text(encoding="utf-8")))) == 4
    assert main([str(tmp_path), "--n-train", "12", "--n-dev", "4", "--seed", "2"]) == 0
    assert "up to date" in capsys.readouterr().out


def test_null_rate_adds_unanswerable_training_questions_only():
    plain, dev = make_demo(600, 20, 4)
    mixed, dev2 = make_demo(600, 20, 4, null_rate=0.3)
    assert dev == dev2
    answerable = [qa for _, qa in _qas(mixed) if not qa.get("is_impossible")]
    assert answerable == [qa for _, qa in _qas(plain)]  # same answerable questions for every rate
    nulls = [(ctx, qa) for ctx, qa in _qas(mixed) if qa.get("is_impossible")]
    n_paragraphs = len(mixed["data"])
    assert 0.2 * n_paragraphs < len(nulls) < 0.4 * n_paragraphs
    _check_unanswerable(nulls)


def _check_unanswerable(nulls):
    kinds = {qa["type"] for _, qa in nulls}
    assert kinds == {"no_fact", "no_entity"}
    for ctx, qa in nulls:
        assert qa["answers"] == [] and qa["relation"] in RELATIONS
        ent, stem = question_entity(qa), RELATIONS[qa["relation"]].stem
        assert ent + stem not in ctx  # the asked fact is never stated
        assert stem in ctx            # ...but the relation is, for another entity (a trap)
        assert (ent in ctx) == (qa["type"] == "no_fact")


def test_checklist_types_and_answers():
    squad = make_checklist(300, 13)
    qas = _qas(squad)
    assert len(qas) == 300 and json.dumps(squad) == json.dumps(make_checklist(300, 13))
    by_type = {t: [(c, qa) for c, qa in qas if qa["type"] == t] for t in CHECKLIST_TYPES}
    assert all(len(v) >= 30 for v in by_type.values()), {t: len(v) for t, v in by_type.items()}
    _check_unanswerable(by_type["no_fact"] + by_type["no_entity"])
    for ctx, qa in by_type["in-domain"] + by_type["paraphrase"]:
        a = qa["answers"][0]
        assert ctx[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"]
        assert is_dev_name(question_entity(qa))
    assert all(qa["question"] == HELDOUT_QUESTIONS[qa["relation"]].format(e=question_entity(qa))
               for _, qa in by_type["paraphrase"])
    train_questions = {qa["question"].replace(question_entity(qa), "{e}") for _, qa in _qas(make_demo(2000, 0)[0])}
    assert not train_questions & set(HELDOUT_QUESTIONS.values())  # held-out wording is never trained on


def test_generalization_uses_unseen_relations():
    squad = make_generalization(200, 13)
    qas = _qas(squad)
    assert len(qas) == 200 and {qa["type"] for _, qa in qas} == set(WORK_RELATIONS)
    assert not set(WORK_RELATIONS) & set(RELATIONS)
    for ctx, qa in qas:
        a = qa["answers"][0]
        assert ctx[a["answer_start"]:a["answer_start"] + len(a["text"])] == a["text"] and ctx.count(a["text"]) == 1
        assert question_entity(qa) in ctx


def test_generated_splits_load_with_project_readers(tmp_path):
    write_demo(tmp_path, n_train=30, n_dev=10, n_generalization=20, n_checklist=40, null_rate=0.5)
    for name in ("train", "dev", "generalization", "checklist"):
        path = tmp_path / "demo" / f"{name}.json"
        examples, stats = load_squad(path, training=name == "train")
        assert not stats.skipped and len(examples) == len(load_references(path))
    checklist, _ = load_squad(tmp_path / "demo" / "checklist.json", training=False)
    assert any(e.is_impossible for e in checklist) and any(not e.is_impossible for e in checklist)
