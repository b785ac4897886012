"""Distillation (issue 17): KL(teacher || student) over each head's scores, mixed with the gold loss."""
import copy
import json

import pytest
import torch
from omegaconf import OmegaConf

from heads.base import NEG, valid_spans
from heads.globalpointer import EfficientGlobalPointer, GlobalPointer
from heads.softmax import SoftmaxHead
from mrc.model.distill import Distiller, kd_loss, kd_loss_cached, score_kind, teacher_top_k
from mrc.model.span_model import SpanModel
from mrc.train.inputs import ConfigError
from mrc.train.teacher import attach_teacher
from tests.model.test_necks import batch, tiny_encoder

HEADS = {"softmax": lambda h: SoftmaxHead(h), "globalpointer": lambda h: GlobalPointer(h, head_size=8),
         "efficient_globalpointer": lambda h: EfficientGlobalPointer(h, head_size=8)}


def student(head_name, seed=0):
    torch.manual_seed(seed)
    enc = tiny_encoder()
    return SpanModel(enc.model, HEADS[head_name](enc.hidden_size)), enc.tokenizer


@pytest.mark.parametrize("head_name", sorted(HEADS))
def test_a_copy_of_the_student_as_teacher_gives_zero_and_another_teacher_more(head_name):
    model, tokenizer = student(head_name)
    b = batch(tokenizer)
    b["labels"] = torch.tensor([[[2, 3]], [[0, 0]]])
    model.eval()
    model.distiller = Distiller(copy.deepcopy(model), alpha=1.0, temperature=2.0, kind=score_kind(model.head))
    same = model.loss(b)
    assert abs(same.item()) < 1e-5
    other, _ = student(head_name, seed=1)
    with torch.no_grad():
        for p in other.head.parameters():
            p.add_(torch.randn_like(p))
    model.distiller = Distiller(other, alpha=1.0, temperature=2.0, kind=score_kind(model.head))
    loss = model.loss(b)
    assert torch.isfinite(loss) and loss.item() > 1e-3
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.head.parameters())
    assert not any(p.grad is not None for p in other.parameters())  # the teacher never trains
    model.distiller = None
    gold = model.loss(b)
    model.distiller = Distiller(other, alpha=0.0, temperature=2.0, kind=score_kind(model.head))
    assert model.loss(b).item() == pytest.approx(gold.item())  # alpha = 0: the gold loss alone


def test_kd_on_a_grid_ignores_invalid_cells():
    mask = torch.tensor([[True, False, True, True]])
    valid = valid_spans(mask)
    t = torch.randn(1, 4, 4).masked_fill(~valid, NEG)
    s = t.clone()
    s[~valid] = 5.0  # garbage in cells no span can take: no effect
    assert kd_loss(s, t, mask, "grid").item() == pytest.approx(0.0, abs=1e-6)
    s[0, 2, 3] += 1.0
    assert kd_loss(s, t, mask, "grid").item() > 0


@pytest.mark.parametrize("kind", ["start_end", "grid"])
def test_cached_top_k_is_the_full_kl_when_it_keeps_every_cell_and_a_lower_bound_otherwise(kind):
    torch.manual_seed(0)
    mask = torch.tensor([[True, False, True, True, True, False], [True, True, True, False, False, False]])
    B, L = mask.shape
    if kind == "start_end":
        shape, invalid = (B, L, 2), ~mask[..., None].expand(B, L, 2)
    else:
        shape, invalid = (B, L, L), ~valid_spans(mask)
    t = (3 * torch.randn(shape)).masked_fill(invalid, NEG)
    s = (3 * torch.randn(shape)).masked_fill(invalid, NEG)
    for T in (1.0, 2.0):
        full = kd_loss(s, t, mask, kind, T)
        every = teacher_top_k(t, mask, kind, T, k=L * L)  # more than the cells: padded, massless entries
        assert every[2].shape == (B, 1 if kind == "grid" else 2, L * L)
        assert kd_loss_cached(s, mask, kind, T, *every).item() == pytest.approx(full.item(), rel=1e-4)
        assert torch.exp(every[3]).max().item() < 1e-6  # nothing left over
        few = teacher_top_k(t, mask, kind, T, k=2)
        part = kd_loss_cached(s, mask, kind, T, *few).item()
        assert 0 < part <= full.item() + 1e-6
        assert kd_loss_cached(t, mask, kind, T, *few).item() == pytest.approx(0.0, abs=1e-5)  # student = teacher


def test_mismatched_heads_and_options_are_refused():
    model, _ = student("globalpointer")
    teacher, _ = student("softmax")
    with pytest.raises(ValueError, match="the teacher's head \\(SoftmaxHead\\) scores start/end"):
        Distiller(teacher, 0.5, 1.0, score_kind(model.head))
    with pytest.raises(ValueError, match="distill.alpha must be in"):
        Distiller(teacher, 1.5, 1.0, "start_end")


def _save(model, tokenizer, path):
    from mrc.model import checkpoint

    cfg = OmegaConf.create({"head": {"_target_": "heads.softmax.SoftmaxHead"}, "model": {"match_feature": False},
                            "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                            "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                       "tune_on": "checklist", "save_nbest": False}})
    return checkpoint.save(path, model, tokenizer, cfg)


def test_a_teacher_with_another_tokenizer_is_refused_in_one_line(tmp_path):
    from mrc.model.encoder import tiny_bert

    model, tokenizer = student("softmax")
    other = tiny_bert(texts=["完全不同的词表", "another vocabulary"], layers=1, hidden_size=32, heads=2,
                      intermediate_size=64, max_position=128)
    _save(SpanModel(other.model, SoftmaxHead(32)), other.tokenizer, tmp_path / "teacher")
    opts = OmegaConf.create({"teacher": str(tmp_path / "teacher"), "alpha": 0.5, "temperature": 1.0})
    with pytest.raises(ConfigError, match="its tokenizer differs from the student's") as err:
        attach_teacher(opts, model, tokenizer, 64, "cpu")
    assert "\n" not in str(err.value)
    _save(model, tokenizer, tmp_path / "same")
    attach_teacher(OmegaConf.create({"teacher": str(tmp_path / "same"), "alpha": 0.5, "temperature": 1.0}),
                   model, tokenizer, 64, "cpu")
    assert model.distiller is not None and model.distiller.alpha == 0.5


@pytest.mark.slow
def test_a_tiny_run_with_a_teacher(tmp_path, caplog, monkeypatch):
    from mrc.train.pipeline import run
    from tests.train.test_e2e import DEMO, compose_cfg

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    run(compose_cfg(DEMO + ["head=globalpointer"], teacher_dir), teacher_dir)
    # The same training texts give the same trained vocabulary, so the tokenizers match.
    cfg = compose_cfg(DEMO + ["head=efficient_globalpointer", f"distill.teacher={teacher_dir}", "distill.alpha=0.7",
                              "distill.temperature=2.0"], student_dir)
    f1 = run(cfg, student_dir)
    metrics = json.loads((student_dir / "metrics.json").read_text())
    assert metrics["splits"]["in_domain"]["F1"] == f1 and metrics["history"][0]["loss"] > 0
    assert (student_dir / "checkpoint" / "mrc.yaml").is_file() and "teacher_cache" not in metrics["data"]
    # distill.cache: scored once before training, then freed (a step without the cache would raise)
    cached_dir = tmp_path / "cached"
    monkeypatch.setattr("mrc.train.loop.PROGRESS_EVERY_S", 0.0)  # a progress line after every batch
    caplog.set_level("INFO")
    run(compose_cfg(DEMO + ["head=efficient_globalpointer", f"distill.teacher={teacher_dir}", "distill.alpha=0.7",
                            "distill.temperature=2.0", "distill.cache=true", "distill.top_k=16"], cached_dir), cached_dir)
    cached = json.loads((cached_dir / "metrics.json").read_text())
    info = cached["data"]["teacher_cache"]
    assert info["windows"] == cached["train"]["windows"] and info["top_k"] == 16
    assert 0 < info["mass_kept"] <= 1 and cached["history"][0]["loss"] > 0
    assert "caching the teacher's distributions over" in caplog.text and "teacher: batch 1/" in caplog.text


def test_the_cached_rest_bin_is_exact_for_a_confident_student():
    """The student's left-over mass is a log-sum-exp, not 1 - sum(kept): exact when it is tiny."""
    mask = torch.ones(1, 8, dtype=torch.bool)
    t = torch.tensor([[[4.0, 4.0], [3.0, 3.0], [2.0, 2.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]]])
    s = t.clone()
    s[0, :2] += 25.0  # the student puts all but ~1e-10 of its mass on the teacher's two best cells
    cached = teacher_top_k(t, mask, "start_end", 1.0, k=2)
    p = t[0, :, 0].double().log_softmax(0)
    q = s[0, :, 0].double().log_softmax(0)
    p_rest, q_rest = p[2:].logsumexp(0), q[2:].logsumexp(0)
    expected = ((p[:2].exp() * (p[:2] - q[:2])).sum() + p_rest.exp() * (p_rest - q_rest)).item()
    assert q_rest.item() < -20  # 1 - exp(...) would cancel to 0 in float32 here
    assert kd_loss_cached(s, mask, "start_end", 1.0, *cached).item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("kind", ["start_end", "grid"])
def test_a_short_window_cached_in_a_longer_teacher_batch_fits_a_shorter_student_batch(kind):
    long_mask = torch.tensor([[True, False, True, True, False, False, False, False]])  # padded to 8 with the teacher
    L = 8
    shape = (1, L, 2) if kind == "start_end" else (1, L, L)
    invalid = ~long_mask[..., None].expand(1, L, 2) if kind == "start_end" else ~valid_spans(long_mask)
    t = torch.randn(shape).masked_fill(invalid, NEG)
    rows, cols, logp, rest = teacher_top_k(t, long_mask, kind, 1.0, k=16)  # more than the valid cells
    assert int(rows.max()) < 4 and int(cols.max()) < 4  # massless entries point at cell 0, inside the window
    short = long_mask[:, :4]  # the same window in a student batch padded only to 4
    s = t[:, :4] if kind == "start_end" else t[:, :4, :4]
    assert kd_loss_cached(s, short, kind, 1.0, rows, cols, logp, rest).item() == pytest.approx(0.0, abs=1e-5)


def test_a_multilabel_globalpointer_is_refused():
    model, _ = student("globalpointer")
    teacher, _ = student("globalpointer", seed=1)
    teacher.head.loss_type = "multilabel"
    with pytest.raises(ValueError, match="teacher's head has loss='multilabel'"):
        Distiller(teacher, 0.5, 1.0, score_kind(model.head), student_head=model.head)
    with pytest.raises(ValueError, match="student's head has loss='multilabel'"):
        Distiller(model, 0.5, 1.0, score_kind(model.head), student_head=teacher.head)


def test_the_same_vocabulary_cut_differently_is_a_different_tokenizer():
    from tokenizers import normalizers

    from mrc.train.teacher import tokenizer_difference

    _, tokenizer = student("softmax")
    assert tokenizer_difference(tokenizer, copy.deepcopy(tokenizer)) is None
    cased = copy.deepcopy(tokenizer)
    cased.backend_tokenizer.normalizer = normalizers.Sequence([])  # no lowercasing, no accent stripping
    assert "cuts" in tokenizer_difference(tokenizer, cased)
