"""Windows, span_mask, labels and the offset round-trip guarantee."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mrc.data.squad import Example
from mrc.data.features import Geometry, build_windows, token_span, window_starts

CJK = "北京上海中国人民大学的是在年月日发布价格公司作者红楼梦首都"
PUNCT = "，。！？《》“”（）、：；"
LATIN = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)
DIGITS = st.text("0123456789", min_size=1, max_size=6)
FULLWIDTH = st.text("０１２３４５６７８９ＡＢＣ", min_size=1, max_size=4)
# Units that BERT pre-tokenization keeps apart: each CJK character and each punctuation mark is a word;
# an alphanumeric run is one word only when its neighbours are not alphanumeric (see `units`).
WORDISH = st.one_of(LATIN, DIGITS, FULLWIDTH)
SINGLE = st.one_of(st.sampled_from(list(CJK)), st.sampled_from(list(PUNCT)))


@st.composite
def units(draw):
    """A context as a list of units, alphanumeric runs never adjacent, plus an answer unit range."""
    out, prev_word = [], False
    for _ in range(draw(st.integers(3, 60))):
        if prev_word or draw(st.booleans()):
            out.append(draw(SINGLE))
            prev_word = False
        else:
            out.append(draw(WORDISH))
            prev_word = True
        if draw(st.integers(0, 9)) == 0:
            out.append(" ")
            prev_word = False
    i = draw(st.integers(0, len(out) - 1))
    j = draw(st.integers(i, min(len(out) - 1, i + 6)))
    while i <= j and out[i] == " ":
        i += 1
    while j >= i and out[j] == " ":
        j -= 1
    if j < i:
        return None
    return out, i, j


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(units(), st.integers(24, 64), st.integers(0, 8))
def test_round_trip_every_window(tokenizer, case, max_len, doc_stride):
    """Any answer lying inside a window maps back through the offsets to exactly its characters."""
    if case is None:
        return
    out, i, j = case
    context = "".join(out)
    start = len("".join(out[:i]))
    answer = "".join(out[i:j + 1])
    ex = Example("x", "价格是多少？", context, [answer], [start])
    windows, stats = build_windows([ex], tokenizer, Geometry(max_len, 8, doc_stride),
                                   training=True)
    assert stats.answers_misaligned == 0
    hits = 0
    for w in windows:
        for s, e in w.labels:
            if (s, e) == (0, 0):
                continue
            hits += 1
            assert w.span_mask[s] and w.span_mask[e] and s <= e
            assert context[w.offsets[s, 0]:w.offsets[e, 1]] == answer
    n_answer_tokens = len(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if n_answer_tokens <= doc_stride + 1:
        assert hits >= 1  # an answer no longer than the overlap always lies wholly inside some window


def test_span_mask_and_layout(tokenizer):
    """[CLS] and context tokens are choosable; question, [SEP] are not; token types follow segments."""
    ex = Example("a", "首都是哪里？", "北京是中国的首都。" * 6, [], [])
    windows, _ = build_windows([ex], tokenizer, Geometry(32, 16, 4), training=False)
    assert len(windows) > 1
    for w in windows:
        ids = w.input_ids.tolist()
        sep = [k for k, t in enumerate(ids) if t == tokenizer.sep_token_id]
        assert ids[0] == tokenizer.cls_token_id and len(sep) == 2 and sep[1] == len(ids) - 1
        expected = np.zeros(len(ids), bool)
        expected[0] = True
        expected[sep[0] + 1:sep[1]] = True
        assert (w.span_mask == expected).all()
        assert (w.token_type_ids[:sep[0] + 1] == 0).all() and (w.token_type_ids[sep[0] + 1:] == 1).all()
        assert (w.offsets[~expected] == -1).all() and (w.offsets[expected][1:] >= 0).all()
        q_ids = set(ids[1:sep[0]])
        flags = [bool(w.span_mask[k] and k > 0 and ids[k] in q_ids) for k in range(len(ids))]
        assert w.question_match.tolist() == flags and any(flags)  # 首/都/是 occur in the question


def test_windows_cover_context_with_exact_overlap(tokenizer):
    """Consecutive windows share exactly doc_stride context tokens and together cover every token."""
    context = "北京是中国的首都，上海是中国最大的城市。" * 10
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    ex = Example("a", "北京", context, [], [])
    windows, _ = build_windows([ex], tokenizer, Geometry(40, 8, 7), training=False)
    spans = [tuple(w.offsets[w.span_mask][1:][[0, -1], 0]) for w in windows]
    covered = set()
    for w in windows:
        covered.update(w.offsets[w.span_mask][1:, 0].tolist())
    assert len(covered) == n
    starts = window_starts(n, 40 - 2 - 3, 7)
    assert len(windows) == len(starts) and starts[1] - starts[0] == 40 - 2 - 3 - 7
    assert spans[0][0] == 0


def test_label_is_cls_when_answer_outside_or_split(tokenizer):
    """The gold span is the label only where it lies wholly inside the window, else (0, 0)."""
    context = "甲" * 30 + "北京大学" + "乙" * 30
    ex = Example("a", "哪里？", context, ["北京大学"], [30])
    windows, _ = build_windows([ex], tokenizer, Geometry(20, 4, 2), training=True)
    labels = [w.labels[0] for w in windows]
    inside = [label for label in labels if label != (0, 0)]
    assert inside and len(inside) < len(labels)
    for w in windows:
        ctx = w.offsets[w.span_mask][1:]
        whole = ctx[0, 0] <= 30 and ctx[-1, 1] >= 34
        assert (w.labels[0] != (0, 0)) == whole


def test_question_truncation(tokenizer):
    ex = Example("a", "北京" * 40, "北京是中国的首都。", [], [])
    windows, stats = build_windows([ex], tokenizer, Geometry(64, 5, 0), training=False)
    sep = windows[0].input_ids.tolist().index(tokenizer.sep_token_id)
    assert sep == 6 and stats.questions_truncated == 1


def test_long_contexts_raise_no_indexing_warning(tokenizer, monkeypatch):
    # transformers warns once per tokenizer that a sequence over model_max_length "will result in indexing
    # errors"; contexts are windowed, so that warning would only alarm users.
    key = "sequence-length-is-longer-than-the-specified-maximum"
    monkeypatch.setattr(tokenizer, "model_max_length", 16)
    monkeypatch.setattr(tokenizer, "deprecation_warnings", {})
    ex = Example("a", "北京是哪国的首都" * 4, "北京是中国的首都。" * 10, ["中国"], [3])
    windows, _ = build_windows([ex], tokenizer, Geometry(32, 8, 4), training=False)
    assert len(windows) > 1 and key not in tokenizer.deprecation_warnings
    tokenizer(ex.context)  # the same call without verbose=False does record it: the check can fail
    assert key in tokenizer.deprecation_warnings


def test_geometry_counts_the_windows_it_cuts(tokenizer):
    """Geometry.count (what the server checks before tokenizing windows) equals the windows build_windows cuts,
    for a short and a truncated long question; Geometry.of reads a data section and an argparse namespace."""
    from argparse import Namespace

    geometry = Geometry.of({"max_len": 40, "max_query_len": 8, "doc_stride": 7})
    assert geometry == Geometry.of(Namespace(max_len=40, max_query_len=8, doc_stride=7)) == Geometry(40, 8, 7)
    context = "北京是中国的首都，上海是中国最大的城市。" * 10
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    for question in ("北京", "中国最大的城市是哪一个城市呢"):
        q = len(tokenizer(question, add_special_tokens=False)["input_ids"])
        windows, _ = build_windows([Example("a", question, context, [], [])], tokenizer, geometry, training=False)
        assert geometry.count(n, q) == len(windows)
        assert geometry.budget_for(q) == 40 - min(q, 8) - 3
    assert geometry.budget == 40 - 8 - 3


def test_geometry_errors():
    with pytest.raises(ValueError, match="doc_stride"):
        Geometry(64, 16, 45).check()
    with pytest.raises(ValueError, match="no room"):
        Geometry(20, 17, 0).check()


def test_token_span_partial_and_outside():
    offs = np.array([[0, 2], [2, 3], [4, 9]])
    assert token_span(offs, 0, 3) == (0, 1)
    assert token_span(offs, 1, 3) == (0, 1)  # starts inside a token: the whole token is covered
    assert token_span(offs, 3, 4) == (-1, -1)  # only whitespace between tokens
    assert token_span(offs, 9, 12) == (-1, -1)


def test_token_span_never_starts_or_ends_on_a_zero_width_marker():
    # "a ▁bc": SentencePiece's inserted marker is made zero-width at (2, 2) by clean_offsets; an answer
    # text with a leading space (" bc", from char 1) used to start on it, a cell outside every span_mask
    offs = np.array([[0, 1], [2, 2], [2, 4], [5, 5], [5, 6]])
    assert token_span(offs, 1, 4) == (2, 2)
    assert token_span(offs, 2, 5) == (2, 2)  # trailing space before the next marker
    assert token_span(offs, 1, 2) == (-1, -1)  # only the space: no real token


def test_slow_tokenizer_rejected():
    class Slow:
        is_fast = False
    with pytest.raises(TypeError, match="fast"):
        build_windows([], Slow(), Geometry(32, 8, 4), training=False)
