"""DuReader-robust / CMRC 2018 scoring (F1 over mixed segments, EM), pure Python."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from mrc.data.squad import DataError, read_json

# The official list also names "……", but it is compared one character at a time,
# so that two-character string never matches and "…" is kept on purpose.
_PUNCT = frozenset(":_`，。：？！()“”；’《》·、,「」（）－～『』|")

# BERT's CJK ideograph blocks; each such character is its own segment.
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)


class MetricInputError(ValueError):
    """A reference or prediction file is missing, not JSON, or has the wrong structure."""

    user_facing = True


@dataclass(frozen=True)
class GoldQuestion:
    """One reference question: accepted answer texts (empty when unanswerable)."""

    id: str
    answers: tuple[str, ...]
    is_impossible: bool
    qtype: str | None = None
    # Why an unanswerable question is one when the file does not say so plainly (see NOTES).
    note: str | None = None


# Questions scored as unanswerable although the file does not flag them so (or flags them and gives answers).
NOTES = {"no_answers": "'answers' is empty and is_impossible is not set",
         "empty_answers": "every answer text is empty and is_impossible is not set",
         "impossible_with_answers": "is_impossible is true but answer texts are given (they are ignored)"}


def _is_cjk(ch: str) -> bool:
    """True if ch lies in one of the BERT CJK ideograph ranges."""
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK_RANGES)


def normalize(text: str) -> str:
    """Lower-case and drop the official punctuation characters (whitespace is kept)."""
    return "".join(ch for ch in text.lower() if ch not in _PUNCT)


def segment(text: str) -> list[str]:
    """Split into CJK characters and '=' (one each) and maximal runs of anything else."""
    segs: list[str] = []
    run: list[str] = []
    for ch in text:
        if ch == "=" or _is_cjk(ch):
            if run:
                segs.append("".join(run))
                run = []
            segs.append(ch)
        else:
            run.append(ch)
    if run:
        segs.append("".join(run))
    return segs


def longest_common_run(a: list[str], b: list[str]) -> int:
    """Length of the longest common contiguous run of items in a and b."""
    best = 0
    prev = [0] * (len(b) + 1)  # prev[j]: run length ending at a[i-1], b[j-1]
    for x in a:
        cur = [0] * (len(b) + 1)
        for j, y in enumerate(b, 1):
            if x == y:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def _f1_single(pred_segs: list[str], ref_segs: list[str]) -> float:
    """F1 of one prediction against one reference, both already segmented."""
    lcs = longest_common_run(pred_segs, ref_segs)
    if lcs == 0:
        return 0.0
    precision = lcs / len(pred_segs)
    recall = lcs / len(ref_segs)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str, references: list[str]) -> float:
    """Max segment-level F1 (0..1) of prediction over the references."""
    pred_segs = segment(normalize(prediction))
    return max((_f1_single(pred_segs, segment(normalize(r))) for r in references), default=0.0)


def em_score(prediction: str, references: list[str]) -> float:
    """1.0 if the normalized prediction equals any normalized reference, else 0.0."""
    pred = normalize(prediction)
    return 1.0 if any(pred == normalize(r) for r in references) else 0.0


def _read_json(path) -> object:
    """Load a JSON file by the project's one rule (:func:`mrc.data.squad.read_json`: UTF-8, a BOM allowed)."""
    try:
        return read_json(path)
    except DataError as exc:
        raise MetricInputError(str(exc)) from None


def _expect(cond: bool, path, where: str, what: str) -> None:
    """Raise a MetricInputError naming the file and JSON path unless cond holds."""
    if not cond:
        raise MetricInputError(f"{path}: {where}: {what}")


def _parse_question(qa: object, path, where: str) -> GoldQuestion:
    """Validate one SQuAD 'qas' entry and turn it into a GoldQuestion."""
    _expect(isinstance(qa, dict), path, where, "expected an object")
    qid = qa.get("id")
    _expect(isinstance(qid, str), path, where, "missing or non-string 'id'")
    where = f"{where} (id {qid!r})"
    answers = qa.get("answers", [])
    _expect(isinstance(answers, list), path, where, "'answers' must be a list")
    texts = []
    for k, ans in enumerate(answers):
        ok = isinstance(ans, dict) and isinstance(ans.get("text"), str)
        _expect(ok, path, f"{where}.answers[{k}]", "expected an object with a string 'text'")
        texts.append(ans["text"])
    flag = qa.get("is_impossible", False)
    _expect(isinstance(flag, bool), path, where, "'is_impossible' must be true or false")
    qtype = qa.get("type") or qa.get("rule")  # built splits record their rewrite rule
    _expect(qtype is None or isinstance(qtype, str), path, where, "'type' must be a string")
    given = any(texts)
    impossible = flag or not given
    note = (None if flag == (not given) else "impossible_with_answers" if flag
            else "empty_answers" if texts else "no_answers")
    # An unanswerable question only accepts "". An answerable one keeps every gold as the official
    # script does, an empty one included (an empty prediction then has EM 1 and F1 0 against it).
    return GoldQuestion(qid, () if impossible else tuple(texts), impossible, qtype, note)


def load_references(path) -> list[GoldQuestion]:
    """Read a SQuAD-format reference file into GoldQuestions (any number of articles/paragraphs)."""
    doc = _read_json(path)
    _expect(isinstance(doc, dict) and isinstance(doc.get("data"), list),
            path, "top level", "expected an object with a 'data' list")
    gold: list[GoldQuestion] = []
    seen: set[str] = set()
    for i, article in enumerate(doc["data"]):
        where = f"data[{i}]"
        ok = isinstance(article, dict) and isinstance(article.get("paragraphs"), list)
        _expect(ok, path, where, "expected an object with a 'paragraphs' list")
        for j, para in enumerate(article["paragraphs"]):
            pwhere = f"{where}.paragraphs[{j}]"
            ok = isinstance(para, dict) and isinstance(para.get("qas"), list)
            _expect(ok, path, pwhere, "expected an object with a 'qas' list")
            for k, qa in enumerate(para["qas"]):
                q = _parse_question(qa, path, f"{pwhere}.qas[{k}]")
                _expect(q.id not in seen, path, f"{pwhere}.qas[{k}]", f"duplicate id {q.id!r}")
                seen.add(q.id)
                gold.append(q)
    return gold


def load_predictions(path) -> dict[str, str]:
    """Read a {id: answer_string} prediction file; a non-string value is an error naming the id."""
    doc = _read_json(path)
    _expect(isinstance(doc, dict), path, "top level", "expected an object mapping id -> answer")
    for qid, ans in doc.items():
        _expect(isinstance(ans, str), path, f"id {qid!r}",
                f"prediction must be a string, got {type(ans).__name__}")
    return doc


def notes(gold: list[GoldQuestion]) -> dict[str, int]:
    """How many questions are scored as unanswerable for each reason in :data:`NOTES`."""
    return dict(Counter(q.note for q in gold if q.note))


def describe_notes(gold: list[GoldQuestion], where) -> str | None:
    """One warning line about the questions :func:`notes` counts, or None when there are none."""
    counts = notes(gold)
    if not counts:
        return None
    ids = [q.id for q in gold if q.note][:3]
    parts = "; ".join(f"{n} where {NOTES[k]}" for k, n in sorted(counts.items()))
    return (f"{where}: {sum(counts.values())} questions are scored as unanswerable (only an empty prediction is "
            f"right): {parts}; e.g. ids {ids}. Fix the records if they have answers")


def score_question(prediction: str | None, gold: GoldQuestion) -> tuple[float, float]:
    """(f1, em) in 0..1 for one question; a missing prediction (None) scores (0, 0)."""
    if prediction is None:
        return 0.0, 0.0
    if gold.is_impossible:
        hit = 1.0 if prediction == "" else 0.0
        return hit, hit
    return f1_score(prediction, list(gold.answers)), em_score(prediction, list(gold.answers))


def evaluate(gold: list[GoldQuestion], predictions: dict[str, str]) -> tuple[dict, dict]:
    """Score all gold questions; return (summary in percent, per-question scores)."""
    per_question: dict[str, dict[str, float]] = {}
    skip = 0
    for q in gold:
        pred = predictions.get(q.id)
        skip += pred is None
        f1, em = score_question(pred, q)
        per_question[q.id] = {"f1": f1, "em": em}
    total = len(gold)

    def pct(key: str) -> float:
        return round(100.0 * sum(s[key] for s in per_question.values()) / total, 3) if total else 0.0

    summary = {"F1": pct("f1"), "EM": pct("em"), "TOTAL": total, "SKIP": skip}
    return summary, per_question


def _group(per_question: dict, ids: list[str]) -> dict:
    """F1/EM in percent (3 decimals) and TOTAL over the given question ids."""
    n = len(ids)
    return {"F1": round(100.0 * sum(per_question[i]["f1"] for i in ids) / n, 3),
            "EM": round(100.0 * sum(per_question[i]["em"] for i in ids) / n, 3), "TOTAL": n}


def breakdown(gold: list[GoldQuestion], per_question: dict) -> dict:
    """Scores per question ``type`` (``by_type``) and for answerable / unanswerable questions
    (``HasAns`` / ``NoAns``); a grouping is present only when the reference file has it."""
    out: dict = {}
    types: dict[str, list[str]] = {}
    for q in gold:
        if q.qtype is not None:
            types.setdefault(q.qtype, []).append(q.id)
    if types:
        out["by_type"] = {t: _group(per_question, ids) for t, ids in sorted(types.items())}
    if any(q.is_impossible for q in gold):
        for name, flag in (("HasAns", False), ("NoAns", True)):
            ids = [q.id for q in gold if q.is_impossible == flag]
            if ids:
                out[name] = _group(per_question, ids)
    return out
