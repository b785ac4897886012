"""Over-sensitivity split (DuReader-robust style): meaning-preserving rewrites of each question.

Contexts and answers are never touched; only the question text changes, one rule per question,
chosen deterministically from (seed, question id) so that a split can be rebuilt exactly.

Default rules change the wording the way the real over-sensitivity set does: ``synonym`` (a word
replaced by a Tongyici Cilin synonym, ``thesaurus.py``) and ``template`` (the question frame rephrased
by question type, ``templates.py`` and ``question_templates.json``). ``noise`` (one typo or a
punctuation/spacing change) tests typing noise instead and is off unless asked for
(``build_over_sensitivity_noise``). ``interrogative``, ``word_order``, ``typo`` and ``punctuation`` are
the older single rules, still selectable by name.
"""
import copy
import random
import re

from .templates import template
from .thesaurus import synonym

RULES = ("synonym", "template")  # the default: meaning-level rewrites only
NOISE_RULES = ("noise",)
ALL_RULES = RULES + NOISE_RULES + ("interrogative", "word_order", "typo", "punctuation")

_CJK = "\u4e00-\u9fff"
_CJK_RE = re.compile(f"[{_CJK}]")

# Groups of interchangeable question words. Single-member groups are never rewritten: they exist so
# that longest-first matching claims them and a shorter word inside them (怎么 in 怎么样, 几 in 几乎)
# is not rewritten into nonsense.
_INTERROGATIVES = (
    ("哪一年", "哪年", "什么时候", "何时"), ("多少", "几"), ("是什么", "是啥"), ("哪里", "哪儿", "什么地方"),
    ("为什么", "为何"), ("怎么", "如何", "怎样"), ("谁", "哪位"), ("多久", "多长时间"), ("多大", "多少岁"),
    ("是什么时候", "是何时"), ("是什么地方", "是哪里"), ("怎么样",), ("几乎",),
)
# Homophone / look-alike characters that a hurried typist confuses; readers still recover the meaning.
_HOMOPHONES = (
    "账帐", "象像", "即既", "的得", "的地", "在再", "做作", "已以", "到道", "部步", "座坐",
    "带戴", "园圆", "须需", "幅副", "练炼", "辨辩", "历厉", "迹绩", "型形", "份分", "候侯",
)
_TYPO_MAP: dict = {}
for _a, _b in _HOMOPHONES:
    _TYPO_MAP.setdefault(_a, []).append(_b)
    _TYPO_MAP.setdefault(_b, []).append(_a)


def _alternatives(groups):
    """Map each word to the other members of its group."""
    return {w: [o for o in g if o != w] for g in groups for w in g}


_INTERROGATIVE_ALTS = _alternatives(_INTERROGATIVES)


def _matches(text, alts):
    """Non-overlapping (start, word) occurrences, longest word first at each position, left to right."""
    words = sorted(alts, key=len, reverse=True)
    found, i = [], 0
    while i < len(text):
        word = next((w for w in words if text.startswith(w, i)), None)
        if word is None:
            i += 1
        else:
            found.append((i, word))
            i += len(word)
    return found


def _replace_word(question, rng, alts):
    candidates = [(i, w) for i, w in _matches(question, alts) if alts[w]]
    if not candidates:
        return None
    i, word = rng.choice(candidates)
    return question[:i] + rng.choice(alts[word]) + question[i + len(word):]


def _interrogative(question, rng):
    return _replace_word(question, rng, _INTERROGATIVE_ALTS)


# "A和B" with A at the start (or after 请问 / punctuation) and B ending before a particle, a question
# word or punctuation: the coordination is then clearly just the two nouns, so swapping them is safe.
_AND_RE = re.compile(f"(请问|^|[^{_CJK}])(?!请问)([{_CJK}]{{1,4}}?)和([{_CJK}]{{1,4}}?)(?=的|是|有|之间|谁|哪|[^{_CJK}]|$)")


def _word_order(question, rng):
    options = []
    if question.count("和") == 1:
        m = _AND_RE.search(question)
        if m and m.group(2) != m.group(3):
            a0, b1 = m.start(2), m.end(3)
            options.append(question[:a0] + m.group(3) + "和" + m.group(2) + question[b1:])
    if question.startswith("请问"):
        rest = question[2:].lstrip("，, ")
        if _CJK_RE.search(rest):
            options.append(rest)  # drop the courtesy prefix
            body, tail = (rest[:-1], rest[-1]) if rest[-1] in "？?" else (rest, "")
            options.append(f"{body}，请问{tail}")  # move it to the end, as in speech
    elif _CJK_RE.match(question):
        options.append("请问" + question)
    options = [o for o in options if o != question]
    return rng.choice(options) if options else None


def _typo(question, rng):
    if len(_CJK_RE.findall(question)) < 4:
        return None
    # Characters inside a question word stay intact: a typo there could change what is asked.
    protected = set()
    for i, word in _matches(question, _INTERROGATIVE_ALTS):
        protected.update(range(i, i + len(word)))
    free = [i for i, c in enumerate(question) if _CJK_RE.match(c) and i not in protected]
    free_set = set(free)
    swaps = [i for i in free if i + 1 in free_set and question[i] != question[i + 1]]
    subs = [i for i in free if question[i] in _TYPO_MAP]
    options = [("swap", i) for i in swaps] + [("sub", i) for i in subs]
    if not options:
        return None
    kind, i = rng.choice(options)
    if kind == "swap":
        return question[:i] + question[i + 1] + question[i] + question[i + 2:]
    return question[:i] + rng.choice(_TYPO_MAP[question[i]]) + question[i + 1:]


def _punctuation(question, rng):
    if not _CJK_RE.search(question):
        return None
    last = question[-1]
    if last in "？?":
        other = "?" if last == "？" else "？"
        options = [question[:-1] + other]
        if _CJK_RE.search(question[:-1]):
            options.append(question[:-1])
    else:
        options = [question + "？", question + "?"]
    # One stray space between two visible characters (never doubling an existing space).
    options += [question[:i] + " " + question[i:] for i in range(1, len(question))
                if not question[i - 1].isspace() and not question[i].isspace()]
    return rng.choice(options)


def _noise(question, rng):
    """Typing noise: one typo or one punctuation/spacing change, whichever applies (random order)."""
    for func in rng.sample([_typo, _punctuation], 2):
        new = func(question, rng)
        if new:
            return new
    return None


def _unprotected(func):
    """A rule that never touches content words ignores the answer texts."""
    return lambda question, rng, protect: func(question, rng)


_RULE_FUNCS = {"synonym": synonym, "template": template, "noise": _unprotected(_noise),
               "interrogative": _unprotected(_interrogative), "word_order": _unprotected(_word_order),
               "typo": _unprotected(_typo), "punctuation": _unprotected(_punctuation)}


def rewrite(question, rng, rules=RULES, protect=()):
    """Rewrite ``question`` with the first applicable rule in a seeded random order: (new, rule) or None.

    ``protect``: answer texts; a synonym never replaces a word that overlaps one of them.
    """
    rules = list(rules)
    unknown = [r for r in rules if r not in _RULE_FUNCS]
    if unknown:
        raise ValueError(f"unknown over-sensitivity rule(s): {unknown}; known: {list(ALL_RULES)}")
    if not question or not question.strip():
        return None
    for rule in rng.sample(rules, len(rules)):
        new = _RULE_FUNCS[rule](question, rng, protect)
        if new and new.strip() and new != question:
            return new, rule
    return None


def build_over_sensitivity(src, seed=0, rules=RULES):
    """Deep-copy a SQuAD dict with each question rewritten; returns (built dict, counts)."""
    rules = tuple(rules)
    out = copy.deepcopy(src)
    counts = {"total": 0, "changed": 0, "unchanged": 0, "by_rule": {r: 0 for r in rules}}
    for article in out.get("data", []):
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                original = qa.get("question", "")
                # String seeds hash stably across processes (unlike hash()), so a split rebuilds exactly.
                rng = random.Random(f"{seed}:{qa.get('id')}")
                answers = tuple(a.get("text", "") for a in qa.get("answers") or [] if a.get("text"))
                result = rewrite(original, rng, rules, protect=answers)
                qa["original_question"] = original
                counts["total"] += 1
                if result is None:
                    qa["rule"] = "unchanged"
                    counts["unchanged"] += 1
                else:
                    qa["question"], qa["rule"] = result
                    counts["changed"] += 1
                    counts["by_rule"][result[1]] += 1
    return out, counts


def build_over_sensitivity_noise(src, seed=0):
    """The typing-noise variant: every question gets one typo or punctuation/spacing change."""
    return build_over_sensitivity(src, seed=seed, rules=NOISE_RULES)


def paired_by_type(types: dict[str, str], original_scores: dict, rewritten_scores: dict,
                   original_preds: dict, rewritten_preds: dict) -> dict:
    """Per rewrite rule (``types``: id -> rule), the same questions before and after the rewrite:
    ``TOTAL``, ``F1_original``, ``F1`` (rewritten), ``drop`` (original - rewritten) and ``consistency``.
    The split-level F1 difference mixes rules with the questions each rule can touch; this pairs them."""
    groups: dict[str, list[str]] = {}
    for i, t in types.items():
        if i in original_scores and i in rewritten_scores:
            groups.setdefault(t, []).append(i)
    out = {}
    for t, ids in sorted(groups.items()):
        before = 100.0 * sum(original_scores[i]["f1"] for i in ids) / len(ids)
        after = 100.0 * sum(rewritten_scores[i]["f1"] for i in ids) / len(ids)
        out[t] = {"TOTAL": len(ids), "F1_original": round(before, 3), "F1": round(after, 3),
                  "drop": round(before - after, 3),
                  "consistency": consistency({i: original_preds.get(i) for i in ids},
                                             {i: rewritten_preds.get(i) for i in ids})}
    return out


def consistency(original_preds, rewritten_preds):
    """Percent (3 decimals) of ids in both prediction maps whose answers are identical; 0.0 if none."""
    common = set(original_preds) & set(rewritten_preds)
    if not common:
        return 0.0
    same = sum(original_preds[i] == rewritten_preds[i] for i in common)
    return round(100.0 * same / len(common), 3)
