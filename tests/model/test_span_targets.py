"""``head.span_target=f1_soft`` (issue 17): the gold keeps ``1 - span_smoothing`` and near misses share the
rest by span F1, on hand-made grids; ``hard`` is today's loss exactly."""
import pytest
import torch
import torch.nn.functional as F

from heads.base import NEG, valid_spans
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer
from heads.softmax import SoftmaxHead
from heads.targets import cumulative_chars, f1_soft_grid, f1_soft_positions, span_f1

MASK = torch.tensor([[True, False, False, True, True, True, True, True]])  # [CLS] q [SEP] c c c c c
GOLD = torch.tensor([[[4, 5]]])  # two context tokens


def test_span_f1_by_hand_in_tokens_and_in_characters():
    starts, ends = torch.tensor([[4, 4, 3, 6, 5]]), torch.tensor([[5, 6, 5, 7, 4]])
    gs, ge = torch.tensor([[4]]), torch.tensor([[5]])
    f1 = span_f1(cumulative_chars(None, MASK), starts, ends, gs, ge)
    assert f1[0].tolist() == pytest.approx([1.0, 0.8, 0.8, 0.0, 0.0])  # exact, one more token each side, far, empty
    chars = torch.tensor([[0, 0, 0, 1, 1, 1, 4, 1]])  # token 6 is a 4-character word (e.g. "2189")
    f1 = span_f1(cumulative_chars(chars, MASK), starts, ends, gs, ge)
    assert f1[0].tolist() == pytest.approx([1.0, 0.5, 0.8, 0.0, 0.0])  # (4, 6): 2 of 6 characters, 2 * 2 / 8


def test_grid_target_counts_characters():
    chars = torch.tensor([[0, 0, 0, 1, 1, 1, 4, 1]])
    q = f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.5, token_chars=chars)[0]
    assert q[4, 6].item() == pytest.approx(q[4, 4].item() * 0.5 / (2 / 3))  # F1 0.5 against (4, 4)'s 2/3
    assert q[3, 5].item() == pytest.approx(q[4, 4].item() * 0.8 / (2 / 3))


def test_grid_target_keeps_the_gold_share_and_gives_near_misses_the_rest_by_f1():
    q = f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.2)[0]
    assert q.sum().item() == pytest.approx(1.0)
    assert q[4, 5].item() == pytest.approx(0.8)  # the gold keeps 1 - smoothing
    assert q[4, 6] > 0 and q[3, 5] > 0 and q[4, 4] > 0  # one token off: partial
    assert q[4, 6].item() == pytest.approx(q[3, 5].item()) and q[4, 4].item() > q[3, 7].item()
    # the near misses share 0.2 in proportion to F1: (4, 6) has F1 0.8, (3, 7) has 2 * 2 / (5 + 2) = 4 / 7
    assert q[3, 7].item() / q[4, 6].item() == pytest.approx((4 / 7) / 0.8)
    assert q[6, 7] == 0 and q[7, 7] == 0 and q[0, 0] == 0  # no overlap, and the null slot: none
    assert (q[~valid_spans(MASK)[0]] == 0).all()
    sharp = f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.2, temperature=0.02)[0]
    assert sharp[4, 5].item() == pytest.approx(0.8) and sharp[3, 7] < 1e-6  # temperature -> 0: best near misses only
    assert torch.equal(f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.0)[0],
                       F.one_hot(torch.tensor(4 * 8 + 5), 64).float().reshape(8, 8))  # smoothing 0: the hard target
    null = f1_soft_grid(torch.tensor([[[0, 0]]]), valid_spans(MASK), smoothing=0.2)[0]
    assert null[0, 0] == 1 and null.sum() == 1


def test_near_misses_are_no_longer_than_span_max_len():
    q = f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.2, max_len=3)[0]
    assert q[3, 5] > 0 and q[4, 6] > 0 and q[3, 6] == 0 and q[3, 7] == 0  # 3 tokens: in; 4 and 5: out
    assert q.sum().item() == pytest.approx(1.0) and q[4, 5].item() == pytest.approx(0.8)
    one = f1_soft_grid(GOLD, valid_spans(MASK), smoothing=0.2, max_len=1)[0]
    assert one[4, 4] > 0 and one[4, 5].item() == pytest.approx(0.8)  # the gold keeps its share even if longer
    lonely = f1_soft_grid(torch.tensor([[[4, 4]]]), valid_spans(MASK), smoothing=0.2, max_len=1)[0]
    assert lonely[4, 4] == 1  # no near miss within the limit: the one-hot target
    q_start, q_end = f1_soft_positions(GOLD, MASK, smoothing=0.2, max_len=2)
    assert q_start[0, 4] > 0 and q_start[0, 3] == 0  # (3, 5) would be 3 tokens long
    assert q_end[0, 5].item() == pytest.approx(0.8) and q_end[0, 4] > 0 and q_end[0, 6] == 0


def test_position_targets_for_the_softmax_head():
    q_start, q_end = f1_soft_positions(GOLD, MASK, smoothing=0.2)
    assert q_start.sum().item() == pytest.approx(1.0) and q_end.sum().item() == pytest.approx(1.0)
    assert q_start[0, 4].item() == pytest.approx(0.8) and q_start[0, 3] > 0 and q_start[0, 5] > 0
    assert q_start[0, 6] == 0 and q_start[0, 0] == 0 and q_start[0, 1] == 0  # after the gold end; [CLS]; question
    assert q_end[0, 5].item() == pytest.approx(0.8) and q_end[0, 7] > 0 and q_end[0, 3] == 0


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_globalpointer_hard_is_todays_loss_and_soft_is_finite_and_prefers_near_spans(cls):
    torch.manual_seed(0)
    hard = cls(8, head_size=4)
    soft = cls(8, head_size=4, span_target="f1_soft", span_smoothing=0.3)
    soft.load_state_dict(hard.state_dict())
    grid = hard(torch.randn(2, 8, 8), MASK.repeat(2, 1))
    labels = torch.tensor([[[4, 5]], [[0, 0]]])
    expected = F.cross_entropy(grid.reshape(2, -1), torch.tensor([4 * 8 + 5, 0]))
    assert hard.loss(grid, MASK.repeat(2, 1), labels).item() == expected.item()
    assert torch.isfinite(soft.loss(grid, MASK.repeat(2, 1), labels))
    # A grid that puts its mass on a span one token off the gold loses less under f1_soft than one that
    # puts it on a far span; under hard both are equally wrong.
    base = torch.zeros(1, 8, 8).masked_fill(~valid_spans(MASK), NEG)
    near, far = base.clone(), base.clone()
    near[0, 4, 6], far[0, 6, 7] = 10.0, 10.0
    assert soft.loss(near, MASK, GOLD) < soft.loss(far, MASK, GOLD)
    assert hard.loss(near, MASK, GOLD).item() == pytest.approx(hard.loss(far, MASK, GOLD).item())


def test_softmax_hard_is_todays_loss_and_soft_is_finite():
    torch.manual_seed(0)
    hard, soft = SoftmaxHead(8), SoftmaxHead(8, span_target="f1_soft")
    soft.load_state_dict(hard.state_dict())
    scores = hard(torch.randn(2, 8, 8), MASK.repeat(2, 1))
    labels = torch.tensor([[[4, 5]], [[0, 0]]])
    expected = (F.cross_entropy(scores[..., 0], labels[:, 0, 0]) + F.cross_entropy(scores[..., 1], labels[:, 0, 1])) / 2
    assert hard.loss(scores, MASK.repeat(2, 1), labels).item() == expected.item()
    loss = soft.loss(scores, MASK.repeat(2, 1), labels)
    assert torch.isfinite(loss) and loss.item() != expected.item()


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="span_target must be one of"):
        GlobalPointer(8, head_size=4, span_target="soft")
    with pytest.raises(ValueError, match="needs loss='softmax'"):
        GlobalPointer(8, head_size=4, loss="multilabel", span_target="f1_soft")
    with pytest.raises(ValueError, match="span_temperature must be > 0"):
        SoftmaxHead(8, span_target="f1_soft", span_temperature=0)
    with pytest.raises(ValueError, match="span_smoothing must be in"):
        SoftmaxHead(8, span_target="f1_soft", span_smoothing=1.0)
    with pytest.raises(ValueError, match="span_max_len must be a positive integer"):
        GlobalPointer(8, head_size=4, span_target="f1_soft", span_max_len=0)


SOFT = {"span_target": "f1_soft", "span_smoothing": 0.3, "span_max_len": 4}


@pytest.mark.parametrize("make", [lambda: SoftmaxHead(16, **SOFT), lambda: GlobalPointer(16, head_size=8, **SOFT),
                                  lambda: EfficientGlobalPointer(16, head_size=8, **SOFT)])
def test_f1_soft_heads_still_learn_the_gold_span(make):
    torch.manual_seed(0)
    head = make()
    hidden, mask = torch.randn(4, 8, 16), MASK.repeat(4, 1)
    labels = GOLD.repeat(4, 1, 1)
    opt = torch.optim.Adam(head.parameters(), 0.05)
    for _ in range(60):
        loss = head.loss(head(hidden, mask), mask, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    from heads.base import top_spans
    with torch.no_grad():
        s, e, _, _ = top_spans(head.span_scores(head(hidden, mask), mask, None), 1)
    assert s[:, 0].tolist() == [4] * 4 and e[:, 0].tolist() == [5] * 4


def test_collate_gives_each_context_token_its_character_count():
    import numpy as np

    from mrc.data.batching import collate
    from mrc.data.features import Window

    offsets = np.array([[-1, -1], [-1, -1], [0, 1], [1, 5], [5, 6]])  # [CLS] [SEP] 北 2189 年
    w = Window(0, np.arange(5), np.zeros(5, np.int64), offsets[:, 0] >= 0, offsets, [(3, 3)])
    short = Window(0, np.arange(3), np.zeros(3, np.int64), np.array([True, False, True]),
                   np.array([[-1, -1], [-1, -1], [0, 2]]))
    assert collate([w, short], pad_id=0)["token_chars"].tolist() == [[0, 0, 1, 4, 1], [0, 0, 2, 0, 0]]
