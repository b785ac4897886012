"""Masked-LM pretraining: masking statistics, whole words, packing, evaluation-text removal, resume and a
pretrain -> fine-tune-loader round trip (tiny, CPU, seconds)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from mrc.pretrain import corpus as pd
from mrc.pretrain.eval_text import EvalTextFilter, drop_eval_text
from mrc.model.encoder import _wordpiece_tokenizer, build_vocab, pretrained
from mrc.pretrain.masking import IGNORE_INDEX, ChineseWordSegmenter, mask_generator, mask_tokens, replacement_ids
from mrc.pretrain.train import CONF_DIR, Progress, _fix_horizon, run_pretrain
from mrc.pretrain.model import lr_factor

CORPUS = [
    "北京是中华人民共和国的首都，人口约2189万人。",
    "《红楼梦》的作者是曹雪芹，成书于18世纪中叶。",
    "这家酒店的服务很好，房间干净，早餐也不错。",
    "外卖送得很快，味道一般，价格有点贵。",
    "2019年iPhone 11在Cupertino发布，价格６９９９元。",
    "科学家在南极发现了一种新的微生物，可以在极寒环境中生存。",
    "上海证券交易所今天公布了新的交易规则。",
    "这本书的印刷质量很差，纸张太薄了。",
]
MASK_ID, CLS_ID, SEP_ID, PAD_ID = 4, 2, 3, 0


def _random_batch(rows: int = 64, width: int = 256, vocab: int = 1000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (rows, width), generator=g)
    lengths = torch.randint(width // 2, width + 1, (rows,), generator=g)
    words = torch.arange(width).expand(rows, width).clone()
    for i, n in enumerate(lengths.tolist()):
        ids[i, 0], ids[i, n - 1], ids[i, n:] = CLS_ID, SEP_ID, PAD_ID
        words[i, 0], words[i, n - 1:] = -1, -1
    return ids, words


def test_masking_statistics_and_specials_never_masked():
    ids, words = _random_batch()
    masked, labels = mask_tokens(ids, words, mask_id=MASK_ID, replacements=torch.arange(5, 1000),
                                 generator=mask_generator(1, 0))
    eligible, selected = words >= 0, labels != IGNORE_INDEX
    assert not (selected & ~eligible).any()  # [CLS], [SEP], [PAD] never selected ...
    assert torch.equal(masked[~eligible], ids[~eligible])  # ... nor changed
    assert torch.equal(labels[selected], ids[selected])
    share = selected.sum().item() / eligible.sum().item()
    assert abs(share - 0.15) < 0.01
    n = selected.sum().item()
    as_mask = (masked[selected] == MASK_ID).sum().item() / n
    kept = (masked[selected] == ids[selected]).sum().item() / n
    as_random = 1 - as_mask - kept
    assert abs(as_mask - 0.8) < 0.03 and abs(as_random - 0.1) < 0.02 and abs(kept - 0.1) < 0.02
    assert not ((masked != ids) & ~selected).any()  # unselected tokens untouched
    again, _ = mask_tokens(ids, words, mask_id=MASK_ID, replacements=torch.arange(5, 1000),
                           generator=mask_generator(1, 1))
    assert not torch.equal(again, masked)  # dynamic: a new draw gives new masks


def test_replacements_skip_special_and_bracketed_tokens():
    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[unused1]": 3, "北": 4, "京": 5}
    assert replacement_ids(vocab, [0, 1, 2]).tolist() == [4, 5]


def test_whole_word_masking_masks_segmenter_words_together(tokenizer):
    seg = ChineseWordSegmenter()
    ids, starts = pd.tokenize_lines(CORPUS, tokenizer, seg)
    first = tokenizer(CORPUS[0], add_special_tokens=False)["input_ids"]
    # 北京 | 是 | 中华人民共和国 | ...: one word start for the 7 characters of 中华人民共和国
    assert starts[:len(first)][3:10].tolist() == [True] + [False] * 6
    packed = pd.PackedCorpus(ids, starts, 24, CLS_ID, SEP_ID, PAD_ID, tokenizer.all_special_ids)
    batch_ids, _, words = packed.batch(range(len(packed)))
    reps = replacement_ids(tokenizer.get_vocab(), tokenizer.all_special_ids)
    multi = 0
    for draw in range(20):
        _, labels = mask_tokens(batch_ids, words, mask_id=tokenizer.mask_token_id, replacements=reps,
                                generator=mask_generator(0, draw))
        selected = labels != IGNORE_INDEX
        for row in range(len(words)):
            for w in words[row].unique().tolist():
                if w >= 0:
                    chosen = selected[row][words[row] == w]
                    assert chosen.all() or not chosen.any()
                    multi += int(chosen.all() and len(chosen) > 1)
    assert multi > 0  # multi-token words were selected, always as a whole


def test_packing_keeps_every_token_in_order(tokenizer):
    ids, starts = pd.tokenize_lines(CORPUS, tokenizer)
    expected = [t for line in CORPUS for t in tokenizer(line, add_special_tokens=False)["input_ids"]]
    assert ids.tolist() == expected and starts.all()
    packed = pd.PackedCorpus(ids, starts, 16, CLS_ID, SEP_ID, PAD_ID, tokenizer.all_special_ids)
    rows = [packed.sequence(k)[0] for k in range(len(packed))]
    assert all(r[0] == CLS_ID and r[-1] == SEP_ID for r in rows)
    assert all(len(r) == 16 for r in rows[:-1]) and 3 <= len(rows[-1]) <= 16
    assert [t for r in rows for t in r[1:-1].tolist()] == expected  # none lost, none repeated
    batch, attention, _ = packed.batch([len(packed) - 1, 0])
    assert batch.shape == (2, 16) and attention[0].sum() == len(rows[-1])
    assert (batch[0, len(rows[-1]):] == PAD_ID).all()


def test_draws_cover_each_epoch_once():
    drawn = [k for d in range(5) for k in pd.draw_indices(10, 4, d, seed=3)]
    assert sorted(drawn[:10]) == list(range(10)) and sorted(drawn[10:20]) == list(range(10))
    assert pd.draw_indices(10, 4, 2, seed=3) == pd.draw_indices(10, 4, 2, seed=3)


CONTEXT = "曹雪芹出身清代内务府正白旗包衣世家，他以坚韧不拔的毅力，历经多年艰辛创作出了极具思想性和艺术性的伟大作品《红楼梦》。"
QUESTION = "红楼梦的作者出身于什么世家？"


def _squad(path: Path) -> Path:
    data = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [
        {"id": "q1", "question": QUESTION, "answers": [{"text": "内务府正白旗包衣世家", "answer_start": 7}]}]}]}]}
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def test_lines_overlapping_evaluation_text_are_dropped(tmp_path):
    filt = EvalTextFilter.from_squad([_squad(tmp_path / "dev.json")], ngram=20, min_chars=8)
    lines = {
        "有人问：红楼梦的作者出身于 什么世家，答案众说纷纭。": "question",  # contains the question (spacing differs)
        "红楼梦的作者出身于什么世家": "question",
        "网上流传一句话：他以坚韧不拔的毅力，历经多年艰辛创作出了极具思想性的书。": "context",  # 20+ shared chars
        "清代内务府正白旗包衣世家": "context",  # a short line found inside a context
        "他以坚韧不拔的毅力写完了这本书。": None,  # shares only 9 characters
        "这家酒店的服务很好，房间干净。": None,
    }
    assert {line: filt.reason(line) for line in lines} == lines
    kept, report = drop_eval_text(list(lines), filt)
    assert kept == [line for line, why in lines.items() if why is None]
    assert report == {"lines": 6, "dropped": 4, "by_reason": {"question": 2, "context": 2}}


def test_runs_of_repeated_characters_are_not_evaluation_text():
    filt = EvalTextFilter(["无关的问题是什么呢？"], ["太好了" + "！" * 30 + CONTEXT])
    assert filt.reason("质量很差" + "！" * 25) is None and filt.reason("！" * 12) is None
    assert filt.reason("据说曹雪芹出身清代内务府正白旗包衣世家，他以坚韧") == "context"  # 22 shared characters


def _config(tmp_path: Path, out: Path, *overrides: str):
    corpus = tmp_path / "corpus"
    if not corpus.is_dir():
        (corpus / "sub").mkdir(parents=True)
        lines = [f"{s}第{i}次。" for i in range(6) for s in CORPUS]
        (corpus / "a.txt").write_text("\n".join(lines[:24]) + "\n\n", encoding="utf-8")
        (corpus / "sub" / "b.txt").write_text("\n".join(lines[24:] + [CONTEXT]) + "\n", encoding="utf-8")
        (tmp_path / "vocab.txt").write_text("\n".join(build_vocab(lines + [CONTEXT], 500)) + "\n", encoding="utf-8")
        _squad(tmp_path / "dev.json")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=[
            "logger=none", f"paths.output_dir={out}", f"data.corpus=[{corpus}]",
            f"model.vocab_file={tmp_path / 'vocab.txt'}",
            f"data.exclude_squad=[{tmp_path / 'dev.json'}]", "data.heldout_lines=6", "data.max_len=32",
            "model.layers=1", "model.hidden_size=32", "model.heads=2", "model.intermediate_size=64",
            "model.max_position=64", "train.batch_size=4", "train.grad_accum=2", "train.max_steps=6",
            "train.log_every=1", "train.save_every=100", "train.progress=false", "train.device=cpu",
            "optim.lr=1e-3", "optim.warmup_steps=2", *overrides])


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    full = run_pretrain(_config(tmp_path, tmp_path / "full"), tmp_path / "full")
    cfg = _config(tmp_path, tmp_path / "cut")
    assert run_pretrain(cfg, tmp_path / "cut", interrupt_at=3) == {"interrupted_at": 3}
    assert (tmp_path / "cut" / "resume" / "pretrain_state.pt").is_file()
    monkeypatch.setattr(pd, "tokenize_lines", None)  # the rerun reuses the tokenized corpus cache
    resumed = run_pretrain(cfg, tmp_path / "cut")
    monkeypatch.undo()
    assert resumed["resumed"] == [{"step": 3, "seconds": pytest.approx(resumed["resumed"][0]["seconds"])}]
    assert resumed["steps"] == full["steps"] == 6 and resumed["loss_curve"] == full["loss_curve"]
    a, b = (load_file(tmp_path / d / "encoder" / "model.safetensors") for d in ("full", "cut"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="another configuration"):
        run_pretrain(_config(tmp_path, tmp_path / "cut", "masking.mask_prob=0.2"), tmp_path / "cut")


def test_sigterm_saves_the_state_and_the_rerun_resumes(tmp_path, monkeypatch):
    import signal

    import mrc.pretrain.train as pt

    step = pt.train_step

    def step_then_signal(*args):
        out = step(*args)
        if args[-2].step == 1:  # Progress before this step's increment: the signal arrives during step 2
            signal.raise_signal(signal.SIGTERM)
        return out

    before = signal.getsignal(signal.SIGTERM)
    cfg = _config(tmp_path, tmp_path / "run")
    monkeypatch.setattr(pt, "train_step", step_then_signal)
    assert run_pretrain(cfg, tmp_path / "run") == {"interrupted_at": 2}
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is removed again
    monkeypatch.undo()
    state = torch.load(tmp_path / "run" / "resume" / "pretrain_state.pt", weights_only=False)
    assert json.loads(state["progress"])["step"] == 2
    resumed = run_pretrain(cfg, tmp_path / "run")
    assert resumed["steps"] == 6 and resumed["resumed"][0]["step"] == 2


def test_pretrain_then_load_as_fine_tuning_encoder(tmp_path):
    out = tmp_path / "run"
    summary = run_pretrain(_config(tmp_path, out, "train.max_steps=3"), out)
    saved = json.loads((out / "pretrain_summary.json").read_text())
    assert saved["steps"] == 3 and saved["dropped_lines"] == 1 and saved["tokens_per_s"] > 0
    for key in ("acc_before", "acc_after", "mask_acc_before", "mask_acc_after", "unigram_acc"):
        assert 0 <= saved[f"heldout_{key}"] <= 1, key
    for key in ("mask_loss_before", "mask_loss_after", "unigram_loss"):
        assert 0 < saved[f"heldout_{key}"] < 20, key
    assert json.loads((out / "eval_overlap.json").read_text())["by_reason"] == {"context": 1}
    assert summary["corpus"]["train_lines"] + summary["corpus"]["heldout_lines"] == 48
    enc = pretrained(name_or_path=str(out / "encoder"), local_files_only=True)
    assert enc.hidden_size == 32 and enc.model.config.num_hidden_layers == 1
    batch = enc.tokenizer(["北京是首都。"], return_tensors="pt")
    hidden = enc.model(**batch).last_hidden_state
    assert hidden.shape == (1, batch["input_ids"].shape[1], 32) and torch.isfinite(hidden).all()
    trained = load_file(out / "encoder" / "model.safetensors")
    assert not any(k.startswith("cls.") for k in trained)  # the encoder only, no MLM head
    assert np.isfinite([row[1] for row in summary["loss_curve"]]).all()


@pytest.mark.slow
def test_masked_tokens_are_learned_from_their_context(tmp_path):
    """Each line repeats one of 10 characters and fills one packed sequence exactly, so a masked character is
    the one around it, while always guessing the most frequent one is right about 1 time in 10. Held-out
    [MASK] accuracy far above that shows that the whole path (packing, masking, attention mask, logits at
    masked positions, held-out scoring) lets the context through."""
    chars = "甲乙丙丁戊己庚辛壬癸"
    lines = [chars[i % 10] * 30 for i in range(200)]  # 30 tokens = data.max_len 32 minus [CLS] and [SEP]
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "c.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "vocab.txt").write_text("\n".join(build_vocab(lines, 50)) + "\n", encoding="utf-8")
    (tmp_path / "dev.json").write_text(json.dumps({"data": []}), encoding="utf-8")
    out = tmp_path / "run"
    saved = run_pretrain(_config(tmp_path, out, "masking.whole_word=false", "data.heldout_lines=40",
                                 "train.max_steps=140", "train.grad_accum=1", "train.batch_size=8",
                                 "train.log_every=70", "train.eval_every=70", "optim.lr=3e-3",
                                 "optim.warmup_steps=5"), out)
    assert saved["heldout_unigram_acc"] < 0.3
    assert saved["heldout_mask_acc_before"] < 0.3
    assert saved["heldout_mask_acc_after"] > 0.9, saved["heldout_curve"]
    assert saved["heldout_mask_loss_after"] < 1.5 < 2.0 < saved["heldout_unigram_loss"]  # ln 10 = 2.3
    assert [row[0] for row in saved["heldout_curve"]] == [70, 140]
    assert saved["heldout_curve"][-1][2] == pytest.approx(saved["heldout_mask_acc_after"], abs=1e-6)


def test_time_budget_sets_the_schedule_horizon(tmp_path):
    cfg = _config(tmp_path, tmp_path / "timed", "train.max_steps=null", "train.max_minutes=1", "train.calibrate_steps=4")
    p = Progress(step=3, seconds=3.0)
    _fix_horizon(cfg, p)
    assert p.total_steps is None  # still calibrating: warmup, flat learning rate
    p.step, p.seconds = 4, 6.0
    _fix_horizon(cfg, p)
    assert p.total_steps == 4 + (60 - 6) // 1.5  # the steps that fit in the time left
    assert lr_factor(0, 2, None) == 0.5 and lr_factor(3, 2, None) == 1.0 and lr_factor(40, 2, 40) == 0.0
    summary = run_pretrain(_config(tmp_path, tmp_path / "timed", "train.max_steps=null", "train.max_minutes=0.01"),
                           tmp_path / "timed")
    assert summary["stopped_by"] in ("max_minutes", "max_steps") and summary["steps"] >= 1
    with pytest.raises(ValueError, match="warmup_steps"):
        run_pretrain(_config(tmp_path, tmp_path / "other", "train.max_steps=null", "train.max_minutes=1",
                             "optim.warmup_steps=null"), tmp_path / "other")


def test_continue_from_a_saved_encoder(tmp_path):
    first = tmp_path / "first"
    run_pretrain(_config(tmp_path, first, "train.max_steps=2"), first)
    out = tmp_path / "continued"
    summary = run_pretrain(_config(tmp_path, out, f"model.init_from={first / 'encoder'}", "model.local_files_only=true",
                                   "train.max_steps=2", "optim.lr=0"), out)
    assert summary["steps"] == 2
    before, after = (load_file(d / "encoder" / "model.safetensors") for d in (first, out))
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)  # loaded, lr 0


def test_mrc_data_excludes_its_eval_splits_and_adds_its_training_contexts(tmp_path, monkeypatch):
    from mrc.pretrain import squad as pretrain_squad

    data, conf = tmp_path / "squad", tmp_path / "conf_data"
    data.mkdir(), conf.mkdir()
    train_ctx = "这家酒店位于西湖边，步行五分钟可到断桥，周边有很多餐馆和商店。"
    qa = {"id": "t1", "question": "酒店在哪里？", "answers": [{"text": "西湖边", "answer_start": 6}]}
    shared = {"id": "t2", "question": "作者是谁？", "answers": [{"text": "曹雪芹", "answer_start": 0}]}
    (data / "train.json").write_text(json.dumps({"data": [{"paragraphs": [
        {"context": train_ctx, "qas": [qa]}, {"context": CONTEXT, "qas": [shared]}]}]}, ensure_ascii=False))
    _squad(data / "dev.json")
    (conf / "toy.yaml").write_text(
        f"root: {data}\ntrain: [train.json]\neval:\n  in_domain:\n    source: dev.json\n    builder:\n"
        "      - {_target_: mrc.data.subsets.hash_subset, _partial_: true, part: eval, eval_share: 1.0, salt: x}\n")
    monkeypatch.setattr(pretrain_squad, "DATA_CONF", conf)
    cfg = _config(tmp_path, tmp_path / "run", "data.exclude_squad=[]", "data.mrc_data=toy", "data.train_contexts=true")
    (tmp_path / "run").mkdir()
    tok = _wordpiece_tokenizer(str(tmp_path / "vocab.txt"), True)
    corpora = pd.prepare_corpora(cfg, tok, tmp_path / "run")
    overlap = json.loads((tmp_path / "run" / "eval_overlap.json").read_text())
    # the corpus's copy of the eval context and the training paragraph sharing it are both dropped
    assert overlap["train_contexts_added"] == 2 and overlap["by_reason"] == {"context": 2}
    assert overlap["exclude_squad"] == [str(tmp_path / "run" / "splits" / "toy_in_domain.json")]
    assert corpora.info["train_lines"] + corpora.info["heldout_lines"] == 49  # 49 corpus lines + 2 contexts - 2 dropped
    with pytest.raises(FileNotFoundError, match="known: \\['toy'\\]"):
        pretrain_squad.data_config("nope")


def test_recipes_compose_with_their_output_dirs():
    for recipe, out in (("tiny_zh", "tiny_zh"), ("minilm_zh", "minilm_zh")):
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("config", overrides=[f"recipe={recipe}"], return_hydra_config=True)
        assert cfg.hydra.run.dir.endswith(f"/{out}") and cfg.data.mrc_data == "cpu_small" and cfg.data.train_contexts
        assert cfg.data.max_len == 256  # = cpu_small's window length: every position embedding is pretrained
        assert cfg.train.max_steps is None and 0 < cfg.train.max_minutes <= 120 and cfg.optim.warmup_steps
    assert cfg.model.freeze_body and cfg.model.init_from.endswith("minilm_zh_transplant")


def test_attention_dropout_applies_to_the_run_not_the_saved_encoder(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from mrc.pretrain.model import set_attention_dropout

    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=32, attention_probs_dropout_prob=0.1))
    assert set_attention_dropout(model, 0.0) == 2
    probs = [m.dropout.p for m in model.modules() if type(m).__name__.endswith("SelfAttention")]
    assert probs == [0.0, 0.0] and model.config.attention_probs_dropout_prob == 0.1
    with pytest.raises(ValueError, match="attention_dropout"):
        set_attention_dropout(torch.nn.Linear(2, 2), 0.0)
    out = tmp_path / "run"
    run_pretrain(_config(tmp_path, out, "train.max_steps=1", "model.attention_dropout=0.0"), out)
    saved = json.loads((out / "encoder" / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == 0.1  # fine-tuning gets the model's own dropout


def test_retain_freed_memory_sets_glibc_thresholds():
    import sys

    from mrc.train.cpu_memory import retain_freed_memory

    assert retain_freed_memory() is sys.platform.startswith("linux")
