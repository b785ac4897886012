"""The speed benchmark's peer pieces and a tiny end-to-end run (no timing assertions: figures go to
experiments/perf/, not tests)."""
import functools
import json

import numpy as np
import pytest
import torch

from mrc.bench import ours as bench
from mrc.bench import peer as bench_peer
from mrc.data.squad import Example
from mrc.data.demo import write_demo
from mrc.model.encoder import tiny_bert
from mrc.model.span_model import SpanModel
from heads.softmax import SoftmaxHead


def _example(qid, question, context, answer):
    start = context.index(answer)
    return Example(qid, question, context, [answer], [start], False, None)


@pytest.fixture(scope="module")
def enc():
    texts = ["北京是中国的首都，人口约2189万人。", "长江全长6300公里，是中国第一长河。"]
    return tiny_bert(texts=texts * 5, layers=1, hidden_size=32, heads=2, intermediate_size=64, seed=0)


def test_peer_train_features_label_the_answer_tokens(enc):
    ex = _example("a", "长江有多长？", "长江全长6300公里，是中国第一长河。" * 3, "6300公里")
    feats = bench_peer.train_features(enc.tokenizer, [ex], max_len=24, doc_stride=8, pad=True)
    assert len(feats) > 1 and all(len(f["input_ids"]) == 24 for f in feats)
    hits = [f for f in feats if f["start_positions"] > 0]
    assert hits and all(f["start_positions"] <= f["end_positions"] for f in hits)
    for f in hits:
        text = enc.tokenizer.decode(f["input_ids"][f["start_positions"]:f["end_positions"] + 1]).replace(" ", "")
        assert text == "6300公里"
    assert any(f["start_positions"] == 0 and f["end_positions"] == 0 for f in feats)  # windows without it


def test_peer_features_without_token_type_ids(enc, monkeypatch):
    """XLM-R-style tokenizers (e5_small) return no token_type_ids: the peer passes none instead of failing."""
    real = bench_peer._tokenize

    def no_types(*args, **kwargs):
        out = real(*args, **kwargs)
        del out["token_type_ids"]
        return out

    monkeypatch.setattr(bench_peer, "_tokenize", no_types)
    ex = _example("a", "长江有多长？", "长江全长6300公里，是中国第一长河。", "6300公里")
    feats = bench_peer.train_features(enc.tokenizer, [ex], max_len=24, doc_stride=8, pad=True)
    assert feats and all(set(f) == {"input_ids", "attention_mask", "start_positions", "end_positions"} for f in feats)


def test_peer_postprocess_picks_best_valid_pair():
    ex = _example("q", "?", "abcdefgh", "cd")
    offsets = [None, (0, 1), (1, 2), (2, 3), (3, 4), (4, 5), None]
    start = np.array([9.0, 0, 0, 5, 1, 0, 9.0])   # 0 and 6 are not context: never chosen
    end = np.array([9.0, 0, 0, 0, 4, 6, 9.0])
    # best valid pair: start 3 (c) + end 5 (e) = 11 > start 3 + end 4 = 9
    assert bench_peer.postprocess([ex], [(0, offsets)], [start], [end]) == {"q": "cde"}
    assert bench_peer.postprocess([ex], [(0, offsets)], [start], [end], max_answer_len=2) == {"q": "cd"}


def test_transplanted_softmax_weights_give_the_same_logits(enc):
    head = SoftmaxHead(enc.hidden_size)
    ours = SpanModel(enc.model, head).eval()
    peer = bench_peer.qa_model(enc.model, head.proj).eval()
    ids = enc.tokenizer("长江有多长？", "长江全长6300公里。", return_tensors="pt")
    mask = torch.ones_like(ids["input_ids"], dtype=torch.bool)
    with torch.no_grad():
        a = ours(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"],
                 token_type_ids=ids["token_type_ids"], span_mask=mask)
        b = peer(**ids)
    assert torch.allclose(a[0, :, 0], b.start_logits[0], atol=1e-5)
    assert torch.allclose(a[0, :, 1], b.end_logits[0], atol=1e-5)


@pytest.mark.slow
def test_bench_runs_end_to_end(tmp_path):
    write_demo(tmp_path, n_train=10, n_dev=60, n_generalization=1, n_checklist=1)
    out = tmp_path / "bench.json"
    assert bench.main(["--data", str(tmp_path / "demo" / "dev.json"), "--vocab", "data",
                       "--out", str(out), "--n-eval", "20", "--max-len", "64", "--max-query-len", "16",
                       "--doc-stride", "16", "--hidden", "32", "--batch-size", "8", "--eval-batch-size", "16"]) == 0
    result = json.loads(out.read_text())
    assert set(result["ours"]) == {"softmax", "globalpointer", "efficient_globalpointer"}
    assert set(result["peer"]["train"]) == {"default", "tuned"} and set(result["peer"]["eval"]) == {"default", "tuned"}
    for key in ("train_vs_hf", "eval_vs_hf", "eval_vs_forward", "decode_share"):
        assert isinstance(result["ratios"][key], float) and result["ratios"][key] > 0
    assert result["config"]["n_eval"] == 20 and result["config"]["n_train"] == 40
    assert result["config"]["cpu"] and result["config"]["cores"] >= 1  # rates are only comparable on one host
    assert 10 < result["config"]["vocab_size"] < 2000  # the characters of the demo contexts, not a WordPiece file
    # our softmax weights give the same answers through the peer's evaluation path
    ours = result["ours"]["softmax"]["eval"]
    assert abs(result["peer"]["ours_softmax_weights_via_peer"]["F1"] - ours["F1"]) <= 10.0


def test_bench_refuses_a_missing_vocabulary_instead_of_building_another(tmp_path):
    """A vocabulary path that does not exist once made the bench build a character vocabulary from the data
    without a word: other windows, other model, timings that compare with nothing."""
    write_demo(tmp_path, n_train=6, n_dev=20, n_generalization=1, n_checklist=1)
    with pytest.raises(SystemExit, match=r"--vocab .*none.txt not found \(--vocab data"):
        bench.main(["--data", str(tmp_path / "demo" / "dev.json"), "--vocab", str(tmp_path / "none.txt"),
                    "--out", str(tmp_path / "b.json")])
    assert not (tmp_path / "b.json").exists()


def test_bench_precision_axis_switches_bf16_products_for_both_sides_and_restores(tmp_path, monkeypatch):
    import torch
    write_demo(tmp_path, n_train=6, n_dev=20, n_generalization=1, n_checklist=1)
    seen = []
    monkeypatch.setattr("mrc.bench.ours._bench",
                        lambda args: seen.append(torch.backends.mkldnn.matmul.fp32_precision) or 0)
    monkeypatch.setattr("mrc.bench.ours.bf16_math_mode_unavailable", lambda: None)  # the wiring, on every machine
    before = torch.backends.mkldnn.matmul.fp32_precision
    assert bench.main(["--data", str(tmp_path / "demo" / "dev.json"), "--precision", "bf16-matmul"]) == 0
    assert bench.main(["--data", str(tmp_path / "demo" / "dev.json")]) == 0
    assert seen == ["bf16", "ieee"] and torch.backends.mkldnn.matmul.fp32_precision == before


def test_bench_refuses_bf16_matmul_where_the_math_mode_changes_nothing(tmp_path, monkeypatch):
    """On torch 2.13's CPU build linear runs on MKL's sgemm, which ignores oneDNN's bf16 math mode: a
    bf16-matmul bench would have timed fp32 against fp32 and printed the ratios as bf16 ones."""
    write_demo(tmp_path, n_train=6, n_dev=20, n_generalization=1, n_checklist=1)
    ran = []
    monkeypatch.setattr("mrc.bench.ours._bench", lambda args: ran.append(args) or 0)
    monkeypatch.setattr("mrc.bench.ours.bf16_math_mode_unavailable", lambda: "this torch build ignores it")
    with pytest.raises(SystemExit, match=r"--precision bf16-matmul: this torch build ignores it, so both sides "
                                         r"would run fp32"):
        bench.main(["--data", str(tmp_path / "demo" / "dev.json"), "--precision", "bf16-matmul"])
    assert bench.main(["--data", str(tmp_path / "demo" / "dev.json")]) == 0 and len(ran) == 1  # fp32 unaffected


@pytest.mark.slow
def test_bench_bf16_runs_every_forward_of_both_sides_under_autocast(tmp_path, monkeypatch):
    """--precision bf16: ours (training, evaluation, the decode timing), the peer (Trainer training and predict,
    its own bf16 setting) and the bare forward all run their encoder under bf16 autocast; ours keeps the head's
    scores fp32. A side left in fp32 would make the ratios compare bf16 with fp32."""
    from transformers import BertForQuestionAnswering, BertModel
    write_demo(tmp_path, n_train=6, n_dev=30, n_generalization=1, n_checklist=1)
    seen = []

    def spy(cls, name):
        forward = cls.forward

        @functools.wraps(forward)  # the Trainer reads forward's signature to pick the batch's columns
        def wrapped(self, *args, **kwargs):
            out = forward(self, *args, **kwargs)
            seen.append((name, torch.is_autocast_enabled("cpu")))
            if name == "ours":
                assert out.dtype == torch.float32  # the head's scores stay fp32 under autocast
            return out
        monkeypatch.setattr(cls, "forward", wrapped)
    spy(SpanModel, "ours")
    spy(BertForQuestionAnswering, "peer")
    spy(BertModel, "encoder")
    out = tmp_path / "bench.json"
    assert bench.main(["--data", str(tmp_path / "demo" / "dev.json"), "--vocab", "data", "--out", str(out),
                       "--heads", "softmax", "--n-eval", "10", "--max-len", "64", "--max-query-len", "16",
                       "--doc-stride", "16", "--hidden", "32", "--batch-size", "8", "--eval-batch-size", "16",
                       "--repeat", "1", "--train-repeat", "1", "--precision", "bf16"]) == 0
    assert {name for name, _ in seen} == {"ours", "peer", "encoder"}
    assert all(on for _, on in seen), [s for s in seen if not s[1]][:3]
    result = json.loads(out.read_text())
    assert result["config"]["precision"] == "bf16" and result["ratios"]["train_vs_hf"] > 0
