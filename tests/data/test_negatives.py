"""data.negatives: unanswerable training questions built from the training files only, deterministic by seed."""
import json
import logging

import pytest
from omegaconf import OmegaConf

from mrc.data.negatives import (DEFAULT_KINDS, KINDS, build_negatives, contains_answer, cut_answers, quotas, split_sentences,
                                total_counts)
from mrc.data.squad import Example, load_squad
from mrc.train.inputs import ConfigError, load_data

TOPICS = ["北京", "上海", "广州", "深圳", "杭州", "南京", "成都", "武汉", "西安", "重庆", "天津", "苏州"]


def paragraph(i: int) -> dict:
    """One paragraph about a city, two questions; answers in their own sentences, plus a Latin sentence."""
    city, year, people = TOPICS[i % len(TOPICS)], 1900 + i, f"{100 + i}万"
    context = (f"{city}是一座城市。它建于{year}年！人口约{people}；气候温和。Visitors like it? Yes.\n"
               f"{city}有很多公园。")
    return {"context": context, "qas": [
        {"id": f"q{i}a", "question": f"{city}建于哪一年？", "answers": [{"text": f"{year}年", "answer_start":
                                                                   context.index(f"{year}年")}]},
        {"id": f"q{i}b", "question": f"{city}人口多少？", "answers": [{"text": people, "answer_start":
                                                                context.index(people)}]}]}


def squad(paragraphs, title="t") -> dict:
    return {"version": "test", "data": [{"title": title, "paragraphs": paragraphs}]}


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture()
def examples(tmp_path):
    return load_squad(write(tmp_path / "train.json", squad([paragraph(i) for i in range(20)])), training=True)[0]


def ex(context, answers, qid="x"):
    starts = [context.index(a) for a in answers]
    return Example(qid, "问题？", context, list(answers), starts, references=list(answers))


def test_sentences_split_on_chinese_and_latin_ends_and_newlines():
    text = "甲。乙！丙？丁；戊;己!庚?辛\n壬"
    assert split_sentences(text) == ["甲。", "乙！", "丙？", "丁；", "戊;", "己!", "庚?", "辛\n", "壬"]
    assert "".join(split_sentences(text)) == text


def test_answer_removed_cuts_every_sentence_holding_an_answer_and_keeps_the_rest_in_order():
    e = ex("北京是首都。北京很大！上海也大。天津近。", ["北京"])
    assert cut_answers(e) == "上海也大。天津近。"
    assert cut_answers(ex("只有北京。", ["北京"])) is None  # nothing left
    # an answer crossing a sentence end removes both sentences; an answer still present after the cut: skipped
    assert cut_answers(ex("甲乙。丙丁。戊。", ["乙。丙"])) == "戊。"
    assert cut_answers(Example("y", "q", "北 京很大。北京。", ["北京"], [6], references=["北京"])) is None
    assert cut_answers(Example("z", "q", "甲乙。丙丁。戊。", [], [], references=["乙。丙"])) is None


def test_whitespace_is_ignored_when_checking_for_an_answer():
    assert contains_answer("他住在New  York。", ["New York"])
    assert contains_answer("编号 12 34", ["1234"]) and not contains_answer("编号 12", ["1234"])


def test_the_share_is_split_evenly_between_kinds(examples):
    assert quotas(5, DEFAULT_KINDS) == {"other_paragraph": 3, "answer_removed": 2}
    assert quotas(5, KINDS) == {"other_paragraph": 2, "similar_paragraph": 2, "answer_removed": 1}
    answerable = sum(not e.is_impossible for e in examples)
    for share in (0.0, 0.25, 0.5, 1.0):
        (negs,), (counts,) = build_negatives([examples], share)
        assert len(negs) == counts["added"] == counts["wanted"] == round(share * answerable)
        assert counts["other_paragraph"] - counts["answer_removed"] in (0, 1)
    (negs,), _ = build_negatives([examples], 0.5, kinds=["answer_removed"])
    assert len(negs) == 20 and all(n.id.endswith("#neg-cut") for n in negs)


def test_negatives_are_deterministic_by_seed_and_never_use_global_random_state(examples):
    import random

    random.seed(1)
    a = build_negatives([examples], 0.5, seed=3)
    random.seed(2)
    b = build_negatives([examples], 0.5, seed=3)
    c = build_negatives([examples], 0.5, seed=4)
    as_tuples = lambda r: [(n.id, n.context) for n in r[0][0]]  # noqa: E731
    assert as_tuples(a) == as_tuples(b) and a[1] == b[1]
    assert as_tuples(a) != as_tuples(c)


def test_both_kinds_are_unanswerable_questions_whose_context_holds_no_answer(examples):
    by_id = {e.id: e for e in examples}
    (negs,), (counts,) = build_negatives([examples], 1.0)
    assert counts["other_paragraph"] == counts["answer_removed"] == 20
    contexts = {e.context for e in examples}
    for n in negs:
        qid, suffix = n.id.split("#")
        src = by_id[qid]
        assert n.is_impossible and n.answers == [] and n.starts == [] and n.references == []
        assert n.question == src.question and n.qtype in KINDS
        assert not contains_answer(n.context, src.answers)
        if suffix == "neg-para":
            assert n.context in contexts and n.context != src.context
        else:
            assert suffix == "neg-cut" and n.context not in contexts and "公园" in n.context
    assert len({n.id for n in negs}) == len(negs)


def test_a_question_with_no_usable_paragraph_is_counted():
    # Both paragraphs hold the answer: no other paragraph qualifies, and the cut leaves nothing.
    group = [ex("北京。", ["北京"], "a"), ex("北京！", ["北京"], "b")]
    (negs,), (counts,) = build_negatives([group], 1.0)
    assert negs == [] and counts["no_paragraph"] == 2 and counts["wanted"] == 2
    assert total_counts([counts, counts])["no_paragraph"] == 4


def test_other_paragraph_stays_within_its_source_file(examples):
    other = [Example(f"o{i}", "问？", f"别的文件{i}。没有答案。", ["别的"], [0], references=["别的"]) for i in range(5)]
    negs, _ = build_negatives([examples, other], 1.0, kinds=["other_paragraph"])
    file_contexts = [{e.context for e in examples}, {e.context for e in other}]
    assert all(n.context in file_contexts[0] for n in negs[0]) and all(n.context in file_contexts[1] for n in negs[1])


def data_cfg(root, **data):
    return OmegaConf.create({"data": {"root": str(root), "train": ["train.json"], "eval": {"in_domain": "dev.json"},
                                      "eval_splits": None, "in_domain": "in_domain", "prepare": None,
                                      "limit_train": None, "limit_eval": None, **data}})


def test_load_data_adds_negatives_to_training_only_counts_and_logs_them(tmp_path, caplog):
    root = tmp_path / "data"
    write(root / "train.json", squad([paragraph(i) for i in range(10)]))
    # The eval file holds paragraphs no training question has: none may become a negative's context.
    dev = write(root / "dev.json", squad([paragraph(i) for i in range(100, 106)], title="dev"))
    dev_ids = {qa["id"] for p in json.loads(dev.read_text())["data"][0]["paragraphs"] for qa in p["qas"]}
    caplog.set_level(logging.INFO, logger="mrc.train.inputs")
    cfg = data_cfg(root, negatives={"share": 0.5, "kinds": list(KINDS), "seed": 0})
    _, train, stats, splits = load_data(cfg, tmp_path / "run")
    negs = [e for e in train if e.is_impossible]
    assert len(train) == 30 and len(negs) == 10
    assert stats[0]["negatives"] == {"questions": 20, "wanted": 10, "added": 10, "other_paragraph": 4,
                                     "similar_paragraph": 3, "answer_removed": 3, "no_paragraph": 0}
    train_contexts = {p["context"] for p in squad([paragraph(i) for i in range(10)])["data"][0]["paragraphs"]}
    dev_contexts = {e.context for e in splits["in_domain"].examples}
    by_id = {e.id: e for e in train}
    for n in negs:  # another training paragraph, or sentences of its own paragraph in their order
        if n.id.endswith(("#neg-para", "#neg-sim")):
            assert n.context in train_contexts and n.context != by_id[n.id.split("#")[0]].context
        else:
            rest = iter(split_sentences(by_id[n.id.split("#")[0]].context))
            assert all(any(s.strip() == r.strip() for r in rest) for s in split_sentences(n.context))
    assert not any(n.context in dev_contexts for n in negs)
    # eval examples untouched: same ids, same count, none unanswerable
    assert {e.id for e in splits["in_domain"].examples} == dev_ids and not any(
        e.is_impossible for e in splits["in_domain"].examples)
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("negatives:")]
    assert line == ["negatives: added 10 (other_paragraph 4, similar_paragraph 3, answer_removed 3) to 20 training "
                    "questions; "
                    "0 questions had no usable paragraph"]
    _, again, _, _ = load_data(cfg, tmp_path / "run2")
    assert [(e.id, e.context) for e in again] == [(e.id, e.context) for e in train]


def test_negatives_are_off_by_default_and_bad_options_are_one_line_config_errors(tmp_path):
    root = tmp_path / "data"
    write(root / "train.json", squad([paragraph(i) for i in range(4)]))
    write(root / "dev.json", squad([paragraph(i) for i in range(100, 102)]))
    _, train, stats, _ = load_data(data_cfg(root), tmp_path / "run")
    assert len(train) == 8 and "negatives" not in stats[0]
    for bad, match in (({"share": 1.5}, r"share must be a number in \[0, 1\]"),
                       ({"share": 0.5, "kinds": ["nope"]}, r"kinds must be a non-empty list"),
                       ({"share": 0.5, "sed": 1}, r"unknown keys \['sed'\]")):
        with pytest.raises(ConfigError, match=r"data\.negatives: " + match):
            load_data(data_cfg(root, negatives=bad), tmp_path / "run")


def test_similar_paragraph_is_the_topical_neighbour_without_the_answer():
    own = "长城是中国古代的军事防御工程。长城全长两万多公里。"
    near = "长城的修建持续了两千多年，秦始皇连接了各国的长城。"   # on the topic, without the answer
    near_answer = "长城全长两万多公里，是世界奇迹。"              # on the topic, holds the answer: never chosen
    far = [f"第{i}段讲的是别的城市的天气和美食。" for i in range(6)]
    q = Example("g", "长城全长多少公里？", own, ["两万多公里"], [own.index("两万多公里")], references=["两万多公里"])
    others = [Example(f"o{i}", "天气如何？", c, [c[:2]], [0], references=[c[:2]])
              for i, c in enumerate([near, near_answer, *far])]
    negs, counts = build_negatives([[q, *others]], 1.0, kinds=["similar_paragraph"])
    by_id = {n.id: n for n in negs[0]}
    assert by_id["g#neg-sim"].context == near and by_id["g#neg-sim"].is_impossible
    assert counts[0]["similar_paragraph"] == 9  # every question of the file found one
    # deterministic, and the paragraph index never sees another file
    again, _ = build_negatives([[q, *others]], 1.0, kinds=["similar_paragraph"])
    assert [(n.id, n.context) for n in again[0]] == [(n.id, n.context) for n in negs[0]]
    alone, counts = build_negatives([[q], others], 1.0, kinds=["similar_paragraph"])
    assert alone[0] == [] and counts[0]["no_paragraph"] == 1
