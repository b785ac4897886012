"""Each head's loss and decoding on hand-made scores, plus the shared grid helpers."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from heads.base import NEG, band_of, masked_pair_scores, span_band, top_spans, valid_spans
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer, log_normaliser, multilabel_ce, rotary
from heads.softmax import SoftmaxHead
from mrc.data.squad import Example
from mrc.data.features import Window
from mrc.eval.inference import postprocess

MASK = torch.tensor([[True, False, False, True, True, True, False]])  # [CLS] q [SEP] c c c [SEP]


def cells(valid):
    return {tuple(x) for x in valid[0].nonzero().tolist()}


def test_valid_spans_rules():
    assert cells(valid_spans(MASK)) == {(0, 0), (3, 3), (3, 4), (3, 5), (4, 4), (4, 5), (5, 5)}
    assert cells(valid_spans(MASK, max_answer_len=2)) == {(0, 0), (3, 3), (3, 4), (4, 4), (4, 5), (5, 5)}


def test_band_helpers_match_the_full_grid():
    assert cells(span_band(MASK, 7)) == {(s, e - s) for s, e in cells(valid_spans(MASK))}
    assert cells(span_band(MASK, 2)) == {(s, e - s) for s, e in cells(valid_spans(MASK, 2))}
    grid = torch.arange(49.0).reshape(1, 7, 7)
    assert band_of(grid, 3)[0, 2].tolist() == [16.0, 17.0, 18.0]  # grid[2, 2..4]
    torch.manual_seed(0)
    masks = torch.stack([MASK[0], torch.tensor([1, 0, 1, 1, 1, 1, 1], dtype=torch.bool), torch.ones(7, dtype=torch.bool)])
    valid = valid_spans(masks)
    q, k, bs, be = torch.randn(3, 7, 4), torch.randn(3, 7, 4), torch.randn(3, 7), torch.randn(3, 7)
    for biases, reference in (((), q @ k.transpose(1, 2)),
                              ((bs, be), q @ k.transpose(1, 2) + bs[:, :, None] + be[:, None, :])):
        folded = masked_pair_scores(q, k, masks, *biases)  # one matmul: mask and biases in extra columns
        assert torch.allclose(folded[valid], reference[valid], atol=1e-5)
        assert (folded[~valid] <= NEG / 2).all() and (folded[~valid] >= 2.01 * NEG).all()


@pytest.mark.parametrize("make", [lambda: SoftmaxHead(16), lambda: GlobalPointer(16, head_size=8),
                                  lambda: GlobalPointer(16, head_size=8, loss="multilabel"),
                                  lambda: EfficientGlobalPointer(16, head_size=8)])
@pytest.mark.parametrize("max_answer_len", [None, 1, 3, 40])
def test_band_decode_equals_full_grid_decode(make, max_answer_len):
    """The band holds exactly the full grid's valid cells with the same scores: same n-best, same null."""
    torch.manual_seed(1)
    head = make().eval()
    L = 12
    mask = torch.rand(4, L) > 0.3
    mask[:, 0] = True
    scores = head(torch.randn(4, L, 16), mask)
    band = head.span_scores(scores, mask, max_answer_len)
    if isinstance(head, SoftmaxHead):
        logp = scores.log_softmax(1)
        full = logp[:, :, None, 0] + logp[:, None, :, 1]
    else:
        full = scores - (scores.reshape(4, -1).logsumexp(1)[:, None, None] if head.loss_type == "softmax" else 0)
    full = full.masked_fill(~valid_spans(mask, max_answer_len), NEG)
    s, e, sc, null = top_spans(band, 10)
    flat = full.reshape(4, -1).clone()
    ref_null = flat[:, 0].clone()
    flat[:, 0] = NEG
    ref_sc, ref_idx = flat.topk(10, 1)
    assert torch.allclose(sc, ref_sc, atol=1e-5) and torch.allclose(null, ref_null, atol=1e-5)
    keep = sc > NEG / 2
    assert torch.equal(s[keep], (ref_idx // L)[keep]) and torch.equal(e[keep], (ref_idx % L)[keep])


def test_softmax_decode_respects_order_and_length():
    start = torch.full((1, 7), -5.0)
    end = torch.full((1, 7), -5.0)
    start[0, 5], end[0, 3] = 9.0, 9.0  # best start after best end: must not be paired
    start[0, 3], end[0, 5] = 4.0, 4.0
    head = SoftmaxHead(4)
    scores = torch.stack([start, end], -1).masked_fill(~MASK[..., None], NEG)
    s, e, sc, null = top_spans(head.span_scores(scores, MASK, None), 3)
    assert (s[0, 0].item(), e[0, 0].item()) in {(3, 3), (5, 5)}  # 9+4 beats 4+4 and (5,3) is invalid
    assert all(a <= b for a, b in zip(s[0].tolist(), e[0].tolist()))
    s, e, sc1, _ = top_spans(head.span_scores(scores, MASK, 1), 20)
    kept = [(a, b) for a, b, v in zip(s[0].tolist(), e[0].tolist(), sc1[0].tolist()) if v > NEG / 2]
    assert sorted(kept) == [(3, 3), (4, 4), (5, 5)]  # length 1 only; [CLS] is never a span
    logp = scores.log_softmax(1)
    assert null.item() == pytest.approx((logp[0, 0, 0] + logp[0, 0, 1]).item())


def test_softmax_loss_matches_cross_entropy():
    torch.manual_seed(0)
    head = SoftmaxHead(8)
    hidden = torch.randn(2, 7, 8)
    mask = MASK.repeat(2, 1)
    scores = head(hidden, mask)
    labels = torch.tensor([[[3, 4]], [[0, 0]]])
    expected = (F.cross_entropy(scores[..., 0], labels[:, 0, 0]) + F.cross_entropy(scores[..., 1], labels[:, 0, 1])) / 2
    assert head.loss(scores, mask, labels).item() == pytest.approx(expected.item())
    assert (scores[~mask] <= NEG / 2).all()


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_globalpointer_grid_mask_and_softmax_loss(cls):
    torch.manual_seed(0)
    head = cls(8, head_size=4)
    grid = head(torch.randn(1, 7, 8), MASK)
    valid = valid_spans(MASK)
    assert (grid[~valid] <= NEG / 2).all() and (grid[valid] > NEG / 2).all()
    labels = torch.tensor([[[3, 5]]])
    expected = F.cross_entropy(grid.reshape(1, -1), torch.tensor([3 * 7 + 5]))
    assert head.loss(grid, MASK, labels).item() == pytest.approx(expected.item())
    lp = head.span_scores(grid, MASK, None)
    assert torch.logsumexp(lp[span_band(MASK, 7)], 0).item() == pytest.approx(0.0, abs=1e-5)  # a distribution


def test_efficient_globalpointer_is_a_globalpointer():
    egp = EfficientGlobalPointer(8, head_size=4, loss="multilabel")
    assert isinstance(egp, GlobalPointer) and egp.loss_type == "multilabel"


def test_globalpointer_decode_argmax_and_length_limit():
    head = GlobalPointer(8, head_size=4)
    grid = torch.full((1, 7, 7), -3.0)
    grid[0, 3, 5], grid[0, 4, 4], grid[0, 0, 0] = 5.0, 2.0, 1.0
    grid = grid.masked_fill(~valid_spans(MASK), NEG)
    s, e, _, null = top_spans(head.span_scores(grid, MASK, None), 1)
    assert (s.item(), e.item()) == (3, 5)
    s, e, _, _ = top_spans(head.span_scores(grid, MASK, 2), 1)
    assert (s.item(), e.item()) == (4, 4)
    ml = GlobalPointer(8, head_size=4, loss="multilabel")
    assert ml.span_scores(grid, MASK, None)[0, 3, 2].item() == 5.0  # band cell (3, 3+2); raw scores
    _, _, _, null = top_spans(ml.span_scores(grid, MASK, None), 1)
    assert null.item() == 1.0


def test_log_normaliser_is_logsumexp():
    torch.manual_seed(0)
    flat = torch.randn(3, 50) * 20
    flat[1, :40] = NEG  # mostly invalid cells
    assert torch.allclose(log_normaliser(flat), flat.logsumexp(1), atol=1e-4)


def test_multilabel_loss_by_hand():
    grid = torch.tensor([[2.0, -1.0, 0.5, NEG]])
    gold = torch.tensor([[True, False, True, False]])
    expected = math.log(1 + math.exp(-1.0)) + math.log(1 + math.exp(-2.0) + math.exp(-0.5))
    assert multilabel_ce(grid, gold).item() == pytest.approx(expected, rel=1e-6)


def test_multilabel_head_uses_every_gold_and_stays_finite():
    head = GlobalPointer(8, head_size=4, loss="multilabel")
    grid = torch.zeros(2, 7, 7).masked_fill(~valid_spans(MASK.repeat(2, 1)), NEG)
    labels = torch.tensor([[[3, 4], [5, 5]], [[0, 0], [-1, -1]]])  # two golds; one window with none
    loss = head.loss(grid, MASK.repeat(2, 1), labels)
    n_valid = int(valid_spans(MASK).sum())
    by_hand = ((math.log(1 + (n_valid - 2)) + math.log(1 + 2)) + (math.log(1 + (n_valid - 1)) + math.log(2))) / 2
    assert torch.isfinite(loss) and loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_rotary_scores_depend_on_relative_position_only():
    q = torch.randn(1, 1, 8).repeat(1, 6, 1)
    k = torch.randn(1, 1, 8).repeat(1, 6, 1)
    g = rotary(q) @ rotary(k).transpose(1, 2)
    assert torch.allclose(g[0, 0, 2], g[0, 3, 5], atol=1e-5) and torch.allclose(g[0, 1, 1], g[0, 4, 4], atol=1e-5)
    assert not torch.allclose(g[0, 0, 1], g[0, 0, 4], atol=1e-3)


@pytest.mark.parametrize("make", [lambda: SoftmaxHead(16), lambda: GlobalPointer(16, head_size=8),
                                  lambda: GlobalPointer(16, head_size=8, loss="multilabel"),
                                  lambda: EfficientGlobalPointer(16, head_size=8)])
@pytest.mark.parametrize("gold", [(4, 5), (0, 0)])
def test_every_head_learns_a_fixed_span_or_the_null_slot(make, gold):
    """A few optimizer steps on fixed inputs make the gold span the best one, or, for "no answer"
    windows, make the null score beat every span (so a null threshold of 0 predicts "")."""
    torch.manual_seed(0)
    head = make()
    hidden = torch.randn(4, 7, 16)
    mask = MASK.repeat(4, 1)
    labels = torch.tensor([[gold]] * 4)
    opt = torch.optim.Adam(head.parameters(), 0.05)
    for _ in range(60):
        loss = head.loss(head(hidden, mask), mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s, e, scores, null = top_spans(head.span_scores(head(hidden, mask), mask, None), 1)
    if gold == (0, 0):
        assert (null > scores[:, 0]).all()
    else:
        assert s[:, 0].tolist() == [4] * 4 and e[:, 0].tolist() == [5] * 4 and (scores[:, 0] > null).all()


def _window(idx, offsets):
    n = len(offsets)
    offs = np.array(offsets, np.int64)
    return Window(idx, np.zeros(n, np.int64), np.zeros(n, np.int64), offs[:, 0] >= 0, offs)


def test_postprocess_best_across_windows_and_null():
    ctx = "甲乙丙丁戊己"
    ex = Example("q1", "?", ctx, [], [])
    w0 = _window(0, [(-1, -1), (0, 1), (1, 2), (2, 3)])
    w1 = _window(0, [(-1, -1), (2, 3), (3, 4), (4, 5)])
    starts = np.array([[1, 2], [2, 1]])
    ends = np.array([[2, 3], [3, 1]])
    scores = np.array([[-1.0, -3.0], [-0.5, -2.0]], np.float32)
    null = np.array([-4.0, 2.0], np.float32)
    preds, nbest = postprocess([ex], [w0, w1], starts, ends, scores, null, n_best=5)
    assert preds == {"q1": "丁戊"}  # window 1's (2, 3) -> chars 3..5, the best score overall
    assert [c["text"] for c in nbest["q1"]["candidates"]] == ["丁戊", "甲乙", "丙", "乙丙"]
    assert nbest["q1"]["null_score"] == -4.0  # the smallest [CLS] score over windows
    preds, _ = postprocess([ex], [w0, w1], starts, ends, scores, null, n_best=5, null_threshold=-4.0)
    assert preds == {"q1": ""}  # -4 - (-0.5) = -3.5 > -4
