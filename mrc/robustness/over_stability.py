"""Over-stability split builder: insert a distractor sentence that repeats the question's words.

Like AddSent (Jia & Liang, 2017): the question is turned into a statement whose wh-word is replaced by a
fake answer of the same kind as the gold one (a number for numbers, a date for dates, a name-like span
otherwise), and one content character is changed so the sentence is about something else and never
answers the question. It is inserted at a seeded sentence boundary that never splits a gold answer;
gold ``answer_start`` values after it are shifted. A model that only matches words picks the fake answer.
"""
from __future__ import annotations

import copy
import random
import re

# Longest first so that 哪一年 is replaced whole, not as 哪.
WH_WORDS = sorted(["哪一年", "哪年", "什么时候", "何时", "多少钱", "多少", "几", "是什么", "什么", "是啥", "哪里",
                   "哪儿", "什么地方", "哪个", "哪些", "哪位", "谁", "多久", "多长时间", "多大", "多高", "多远",
                   "为什么", "为何", "怎么样", "怎么", "如何", "怎样", "哪"], key=len, reverse=True)
STOP = set("的是了在有和与及或不也都就而被把从对为以这那之其")
POOL = "王李张刘陈杨黄赵吴周徐孙马朱胡郭林罗郑梁宋唐许韩冯邓曹彭曾田董袁潘蒋蔡余杜叶程苏魏吕丁沈任姚卢姜崔钟谭陆汪范金石廖贾夏韦傅方白邹孟熊秦邱江尹薛闫段雷侯龙史黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤"
BOUNDARY = re.compile(r"[。！？!?；;\n]")
DATE = re.compile(r"\d{1,4}\s*[年月日号]")
DIGITS = re.compile(r"[0-9０-９]")


def answer_kind(text: str) -> str:
    """``date`` (digits with 年/月/日), ``number`` (any other digits) or ``name``."""
    if DATE.search(text):
        return "date"
    return "number" if DIGITS.search(text) else "name"


def fake_answer(text: str, rng: random.Random) -> str:
    """A different answer of the same kind and shape: digits redrawn, CJK characters from a name pool."""
    kind = answer_kind(text)
    for _ in range(20):
        out = []
        for ch in text:
            if "0" <= ch <= "9":
                out.append(str(rng.randint(1 if not out or not out[-1].isdigit() else 0, 9)))
            elif "０" <= ch <= "９":
                out.append(chr(ord("０") + rng.randint(0, 9)))
            elif "\u4e00" <= ch <= "\u9fff" and kind == "name":  # numbers and dates keep their units
                out.append(rng.choice(POOL))
            elif ch.isascii() and ch.isalpha():
                out.append(rng.choice("ABCDEFGHKMNPRSTWXZ" if ch.isupper() else "abcdefghkmnprstwxz"))
            elif "Ａ" <= ch <= "Ｚ" or "ａ" <= ch <= "ｚ":  # full-width Latin stays full-width
                out.append(chr(ord("Ａ" if ch <= "Ｚ" else "ａ") + rng.randint(0, 25)))
            else:
                out.append(ch)
        fake = "".join(out)
        if fake != text:
            return fake
    return text + rng.choice(POOL)


def distractor_sentence(question: str, fake: str, rng: random.Random) -> str | None:
    """The question as a statement carrying ``fake``, with one content character changed; None if impossible."""
    q = re.sub(r"^(请问|请告诉我)", "", question.strip()).rstrip("？?。！! 呢吗")
    for wh in WH_WORDS:
        if wh in q:
            stmt = q.replace(wh, ("是" if wh.startswith("是") else "") + fake, 1)
            break
    else:
        stmt = q + "是" + fake
    start = stmt.find(fake)
    spots = [i for i, ch in enumerate(stmt) if "\u4e00" <= ch <= "\u9fff" and ch not in STOP
             and not start <= i < start + len(fake)]
    if not spots:
        return None
    i = rng.choice(spots)
    new = rng.choice([c for c in POOL if c != stmt[i]])
    return stmt[:i] + new + stmt[i + 1:] + "。"


def safe_boundaries(context: str, spans: list[tuple[int, int]]) -> list[int]:
    """Insertion points after sentence ends (and 0 / len) that do not fall strictly inside a gold span."""
    points = sorted({0, len(context), *(m.end() for m in BOUNDARY.finditer(context))})
    return [p for p in points if not any(s < p < e for s, e in spans)]


def build_over_stability(src: dict, seed: int = 0) -> tuple[dict, dict]:
    """Return (built SQuAD dict, counts); every question gets its own paragraph (its own distractor)."""
    counts = {"total": 0, "changed": 0, "unchanged": 0, "by_reason": {}, "by_kind": {}}
    out = {"version": f"{src.get('version', '')}+over_stability", "data": []}
    for article in src.get("data", []):
        paragraphs = []
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                counts["total"] += 1
                new_para, reason = _with_distractor(para["context"], qa, seed)
                if reason:
                    counts["unchanged"] += 1
                    counts["by_reason"][reason] = counts["by_reason"].get(reason, 0) + 1
                else:
                    counts["changed"] += 1
                    kind = new_para["qas"][0]["distractor"]["kind"]
                    counts["by_kind"][kind] = counts["by_kind"].get(kind, 0) + 1
                paragraphs.append(new_para)
        out["data"].append({**{k: v for k, v in article.items() if k != "paragraphs"}, "paragraphs": paragraphs})
    return out, counts


def _with_distractor(context: str, qa: dict, seed: int) -> tuple[dict, str | None]:
    """One question's paragraph with a distractor inserted, or unchanged with the reason."""
    qa = copy.deepcopy(qa)
    keep = {"context": context, "qas": [qa]}
    answers = [a for a in qa.get("answers", []) if a.get("text")]
    if qa.get("is_impossible") or not answers:
        return keep, "unanswerable"
    spans = []
    for a in answers:
        s = a.get("answer_start", -1)
        if not (0 <= s and context[s:s + len(a["text"])] == a["text"]):
            s = context.find(a["text"])
        if s < 0:
            return keep, "answer_not_in_context"
        a["answer_start"] = s
        spans.append((s, s + len(a["text"])))
    rng = random.Random(f"{seed}:{qa['id']}")
    gold = answers[0]["text"]
    fake = fake_answer(gold, rng)
    sentence = distractor_sentence(qa["question"], fake, rng)
    if sentence is None or fake in context:
        return keep, "no_distractor"
    points = safe_boundaries(context, spans)
    if not points:
        return keep, "no_safe_position"
    pos = rng.choice(points)
    for a in answers:
        if a["answer_start"] >= pos:
            a["answer_start"] += len(sentence)
    qa["distractor"] = {"text": sentence, "start": pos, "fake_answer": fake, "kind": answer_kind(gold)}
    return {"context": context[:pos] + sentence + context[pos:], "qas": [qa]}, None


def distractor_capture(built: dict, predictions: dict[str, str]) -> float:
    """Percent (3 decimals) of predicted questions whose answer lies inside the inserted sentence only."""
    hit = n = 0
    for article in built.get("data", []):
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                d, pred = qa.get("distractor"), predictions.get(qa["id"])
                if d is None or pred is None:
                    continue
                n += 1
                original = para["context"][:d["start"]] + para["context"][d["start"] + len(d["text"]):]
                hit += bool(pred) and pred in d["text"] and pred not in original
    return round(100.0 * hit / n, 3) if n else 0.0
