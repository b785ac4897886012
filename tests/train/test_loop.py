"""Training utilities: optimizer groups, schedule, window sampling, batching and collation."""
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from heads.softmax import SoftmaxHead
from mrc.data.batching import batches, collate
from mrc.model.encoder import tiny_bert
from mrc.data.features import Window
from mrc.model.span_model import SpanModel
from mrc.train.loop import build_optimizer, epoch_windows, steps_per_epoch, window_keeps

OPTIM = OmegaConf.create({"encoder_lr": 1e-4, "head_lr": 1e-2, "weight_decay": 0.1, "warmup_ratio": 0.25,
                          "betas": [0.9, 0.999], "eps": 1e-8})


def window(n, label=(0, 0)):
    return Window(0, np.arange(n), np.zeros(n, np.int64), np.ones(n, bool), np.zeros((n, 2), np.int64), [label])


def test_optimizer_groups_and_schedule():
    enc = tiny_bert(texts=["北京是首都"], layers=1, hidden_size=16, heads=2, intermediate_size=32)
    model = SpanModel(enc.model, SoftmaxHead(16), match_feature=True)
    opt, sched = build_optimizer(model, OPTIM, total_steps=8)
    groups = {g["name"]: g for g in opt.param_groups}
    assert set(groups) == {"encoder", "encoder_no_decay", "head", "head_no_decay"}
    assert groups["encoder"]["weight_decay"] == 0.1 and groups["encoder_no_decay"]["weight_decay"] == 0.0
    assert groups["head"]["initial_lr"] == 1e-2 and groups["encoder"]["initial_lr"] == 1e-4
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = [names[id(p)] for p in groups["encoder_no_decay"]["params"]]
    assert no_decay and all(n.endswith("bias") or "LayerNorm" in n for n in no_decay)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in model.parameters() if p.requires_grad}  # nothing left untrained
    assert any(p is model.match_embed.weight for p in groups["head"]["params"])
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == max(lrs) == 1e-4 and lrs[-1] < lrs[3]  # 2 warmup steps, then decay


def test_null_window_sampling_keeps_every_answer():
    ws = [window(4, (1, 2))] * 10 + [window(4)] * 90
    kept = epoch_windows(ws, 0.2, seed=3)
    assert sum(w.labels[0] != (0, 0) for w in kept) == 10
    assert 5 <= sum(w.labels[0] == (0, 0) for w in kept) <= 35
    assert epoch_windows(ws, 0.2, seed=3) == kept and epoch_windows(ws, 0.2, seed=4) != kept
    assert epoch_windows(ws, 1.0, seed=0) is ws
    tr = OmegaConf.create({"null_window_keep": 0.2, "batch_size": 8, "grad_accum": 2})
    assert steps_per_epoch(ws, tr) == 2  # 10 + 18 windows -> 4 batches -> 2 steps


def test_batches_cover_everything_once_and_group_lengths():
    lengths = list(np.random.default_rng(0).integers(5, 100, 500))
    for shuffle in (False, True):
        out = batches(lengths, 16, shuffle=shuffle, seed=1)
        flat = sorted(i for b in out for i in b)
        assert flat == list(range(500)) and all(len(b) <= 16 for b in out)
    ev = batches(lengths, 16, shuffle=False)
    assert [lengths[i] for b in ev for i in b] == sorted(lengths, reverse=True)
    tr = batches(lengths, 16, shuffle=True, seed=1)
    padding = sum(16 * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in tr if len(b) == 16)
    rand = np.random.default_rng(1).permutation(500)
    rand_pad = sum(16 * max(lengths[i] for i in rand[k:k + 16]) - sum(lengths[i] for i in rand[k:k + 16])
                   for k in range(0, 496, 16))
    assert padding < rand_pad / 3 and tr != batches(lengths, 16, shuffle=True, seed=2)


def test_collate_pads_and_masks():
    a = window(3, (1, 2))
    b = Window(1, np.arange(5), np.array([0, 0, 1, 1, 1]), np.array([1, 0, 0, 1, 1], bool),
               np.zeros((5, 2), np.int64), [(3, 3), (4, 4)])
    out = collate([a, b], pad_id=0)
    assert out["input_ids"].shape == (2, 5) and out["labels"].shape == (2, 2, 2)
    assert out["attention_mask"][0].tolist() == [1, 1, 1, 0, 0]
    assert out["span_mask"][0].tolist() == [True, True, True, False, False]
    assert out["labels"][0].tolist() == [[1, 2], [-1, -1]] and out["labels"][1].tolist() == [[3, 3], [4, 4]]
    assert out["input_ids"].dtype == torch.int64


def test_eval_scalars_names():
    from mrc.train.evaluation import eval_scalars

    summary = {"F1": 50.0, "EM": 40.0, "by_type": {"vocab": {"F1": 1.0, "EM": 2.0, "TOTAL": 3}},
               "NoAns": {"F1": 3.0, "EM": 4.0, "TOTAL": 1}}
    assert eval_scalars("checklist", summary) == {
        "eval/checklist/f1": 50.0, "eval/checklist/em": 40.0, "eval/checklist/vocab/f1": 1.0,
        "eval/checklist/vocab/em": 2.0, "eval/checklist/noans/f1": 3.0, "eval/checklist/noans/em": 4.0}
    summary["abstention"] = {"temperature": {"aurc": 0.2, "n": 5, "has_ans_f1": None, "T": 1.5}, "in_sample": True}
    scalars = eval_scalars("checklist", summary)
    assert scalars["eval/checklist/abstention/temperature/aurc"] == 0.2
    assert scalars["eval/checklist/abstention/temperature/T"] == 1.5
    assert "eval/checklist/abstention/temperature/has_ans_f1" not in scalars  # None: no answerable question


def test_fractional_epochs_train_a_share_of_the_last_epoch():
    from mrc.train.loop import epoch_fraction, limit_batches, n_epochs, total_steps

    ws = [window(4, (1, 2))] * 64
    tr = OmegaConf.create({"null_window_keep": 1.0, "batch_size": 8, "grad_accum": 1, "epochs": 2.5})
    assert n_epochs(tr) == 3 and [epoch_fraction(tr, e) for e in (1, 2, 3)] == [1.0, 1.0, 0.5]
    assert total_steps(ws, tr) == 8 + 8 + 4 and limit_batches(8, 0.01) == 1 and limit_batches(8, 1.0) == 8
    assert total_steps(ws, OmegaConf.merge(tr, {"epochs": 0.25})) == 2
    with pytest.raises(ValueError, match="epochs must be > 0"):
        n_epochs(OmegaConf.merge(tr, {"epochs": 0}))


def test_progress_durations_read_as_time():
    from mrc.train.loop import duration

    assert [duration(s) for s in (0.4, 40, 59.6, 61, 725, 3600, 3930.2)] == \
        ["0 s", "40 s", "1 min", "1 min", "12 min", "1 h 00 min", "1 h 05 min"]


@pytest.mark.slow
def test_demo_run_with_torch_compile(tmp_path):
    """trainer.compile=true trains through torch.compile (a C compiler builds the CPU kernels) and records it."""
    import json
    import shutil
    from mrc.train.pipeline import run
    from tests.train.test_e2e import DEMO, compose_cfg
    from tests.train.test_resume import with_overrides
    if not (shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")):
        pytest.skip("torch.compile on the CPU needs a C compiler (gcc, cc or clang on PATH)")
    cfg = compose_cfg(with_overrides(DEMO, ["head=softmax", "data.prepare.n_train=80", "trainer.compile=true"]),
                      tmp_path)
    f1 = run(cfg, tmp_path)
    train = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert train["compile"] == "default" and train["attention"] == "sdpa" and 0 <= f1 <= 100
    assert (tmp_path / "checkpoint" / "span.safetensors").is_file()  # in-place compile: names unchanged


def test_negative_windows_have_their_own_share():
    neg = [window(4) for _ in range(50)]
    for w in neg:
        w.unanswerable = True
    ws = [window(4, (1, 2))] * 10 + [window(4)] * 50 + neg
    kept = epoch_windows(ws, 0.2, seed=3, negative_keep=1.0)
    assert sum(w.unanswerable for w in kept) == 50 and 2 <= sum(w.labels[0] == (0, 0) and not w.unanswerable
                                                                for w in kept) <= 22
    # null (the default) draws exactly as before the option existed
    assert epoch_windows(ws, 0.2, seed=3, negative_keep=None) == epoch_windows(ws, 0.2, seed=3)
    # the answerable questions' null windows are the same whatever the negatives' share
    others = [w for w in epoch_windows(ws, 0.2, seed=3, negative_keep=0.0) if not w.unanswerable]
    assert others == [w for w in epoch_windows(ws, 0.2, seed=3) if not w.unanswerable]
    tr = OmegaConf.create({"null_window_keep": 0.2, "negative_window_keep": 1.0, "batch_size": 10, "grad_accum": 1})
    assert steps_per_epoch(ws, tr) == 7  # 10 + 10 + 50 windows
    for bad in (1.5, -0.1, "all", True):
        with pytest.raises(ValueError, match="trainer.negative_window_keep"):
            window_keeps(OmegaConf.create({"null_window_keep": 0.2, "negative_window_keep": bad}))
