"""finetune=full|frozen|adapters|lora (issue 17): what trains, and a save -> load round trip per mode and
head that gives the same scores and predictions."""
import json
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from heads import HEADS
from heads.globalpointer import GlobalPointer
from mrc.model import checkpoint
from mrc.model.finetune import FINETUNES, Adapters, count_parameters
from mrc.model.span_model import SpanModel
from tests.conftest import ROOT
from tests.model.test_necks import batch, tiny_encoder

MODES = {"full": {}, "frozen": {}, "adapters": {"size": 4}, "lora": {"rank": 2, "alpha": 4, "target_modules": "query,value"}}


def head_args(head_name):
    return {} if head_name == "softmax" else {"head_size": 8}


def make(mode, head_name="globalpointer"):
    torch.manual_seed(0)
    enc = tiny_encoder()
    model = SpanModel(enc.model, HEADS[head_name](enc.hidden_size, **head_args(head_name)))
    FINETUNES[mode](**MODES[mode]).apply(model)
    return model, enc


def train_a_little(model, tokenizer):
    b = batch(tokenizer)
    b["labels"] = torch.tensor([[[2, 3]], [[4, 6]]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        opt.zero_grad()
        model.loss(b).backward()
        opt.step()
    return model.eval()


def test_what_trains_in_each_mode():
    counts = {mode: count_parameters(make(mode)[0]) for mode in MODES}
    head = sum(p.numel() for p in GlobalPointer(32, head_size=8).parameters())
    assert counts["full"]["trainable"] == counts["full"]["total"]
    assert counts["frozen"]["trainable"] == head
    # 2 layers x 2 sites, each 32 -> 4 -> 32 with biases; plus the encoder's LayerNorms (embeddings' and
    # 2 per layer, 32 scales and 32 biases each), which train too as in Houlsby et al.
    assert counts["adapters"]["trainable"] == head + 4 * (32 * 4 + 4 + 4 * 32 + 32) + 5 * 64
    # query and value of 2 layers, each A (2 x 32) and B (32 x 2)
    assert counts["lora"]["trainable"] == head + 4 * (2 * 32 + 32 * 2)
    assert counts["lora"]["total"] == counts["full"]["total"] + 4 * 128


def test_a_frozen_encoder_without_dropout_stays_in_eval_mode_while_the_head_trains():
    torch.manual_seed(0)
    enc = tiny_encoder()
    enc.model.config.hidden_dropout_prob = 0.3  # visible dropout: two train-mode passes differ with it on
    for m in enc.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.3
    b = batch(enc.tokenizer)
    outs = {}
    for dropout in (True, False):
        model = SpanModel(enc.model, GlobalPointer(enc.hidden_size, head_size=8))
        FINETUNES["frozen"](encoder_dropout=dropout).apply(model)
        model.train()
        with torch.no_grad():
            outs[dropout] = [model(**b) for _ in range(2)]
        assert model.head.training
        assert model.encoder.training is dropout  # without dropout the hook ran: the encoder is in eval mode
    assert not torch.allclose(outs[True][0], outs[True][1])
    assert torch.equal(outs[False][0], outs[False][1])
    with torch.no_grad():
        assert torch.equal(model.eval()(**b), outs[False][0])  # the same as inference
    assert count_parameters(model)["trainable"] == sum(p.numel() for p in model.head.parameters())


def test_a_new_adapter_is_the_identity():
    model, enc = make("full")
    adapted, _ = make("adapters")
    b = batch(enc.tokenizer)
    with torch.no_grad():
        assert torch.allclose(model.eval()(**b), adapted.eval()(**b), atol=1e-6)
    assert len(adapted.adapters) == 4


def _cfg(mode, head_name):
    head = HEADS[head_name]
    return OmegaConf.create({"head": {"_target_": f"{head.__module__}.{head.__name__}", **head_args(head_name)},
                             "finetune": {"_target_": f"mrc.model.finetune.{FINETUNES[mode].__name__}", **MODES[mode]},
                             "model": {"match_feature": False},
                             "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                             "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                        "tune_on": "checklist", "save_nbest": False}})


@pytest.mark.parametrize("head_name", sorted(HEADS))
@pytest.mark.parametrize("mode", sorted(MODES))
def test_save_load_round_trip_gives_the_same_scores(tmp_path, mode, head_name):
    model, enc = make(mode, head_name)
    model = train_a_little(model, enc.tokenizer)
    path = checkpoint.save(tmp_path / "checkpoint", model, enc.tokenizer, _cfg(mode, head_name))
    loaded, tokenizer, _ = checkpoint.load(path)
    assert type(loaded.head) is HEADS[head_name]
    b = batch(tokenizer)
    with torch.no_grad():
        before, after = model(**b), loaded(**b)
    valid = before > -1e11
    assert torch.allclose(before[valid], after[valid], atol=1e-4)  # LoRA: merged weights, float rounding only
    assert torch.equal(before.reshape(2, -1).argmax(1), after.reshape(2, -1).argmax(1))
    span_keys = set(load_file(str(path / "span.safetensors")))
    assert any(k.startswith("adapters.") for k in span_keys) == (mode == "adapters")
    encoder_keys = set(load_file(str(path / "encoder" / "model.safetensors")))
    assert not any("lora" in k for k in encoder_keys)  # merged: a plain HF encoder
    if mode == "lora":  # training changed the merged weights, and the run's model still has its LoRA layers
        assert type(model.encoder).__module__.startswith("peft")
        assert type(loaded.encoder).__module__.startswith("transformers")


def test_adapters_attach_once():
    adapted, _ = make("adapters")
    with pytest.raises(ValueError, match="already has adapters"):
        Adapters(size=4).restore(adapted)


def test_adapters_refuse_an_encoder_without_output_projections():
    enc = tiny_encoder()
    m = SpanModel(enc.model, GlobalPointer(enc.hidden_size, head_size=8))
    m.encoder = torch.nn.Sequential(torch.nn.Linear(4, 4))
    m.encoder.config = enc.model.config
    with pytest.raises(ValueError, match="finetune=adapters: the encoder has no"):
        Adapters(size=4).apply(m)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["adapters", "lora", "frozen"])
def test_a_run_records_trainable_parameters_and_its_checkpoint_predicts_the_same(tmp_path, mode):
    from mrc.train.pipeline import run
    from tests.train.test_e2e import DEMO, compose_cfg

    extra = {"adapters": ["finetune.size=8"], "lora": ["finetune.rank=4"], "frozen": ["finetune.encoder_dropout=false"]}[mode]
    cfg = compose_cfg(DEMO + ["head=efficient_globalpointer", f"finetune={mode}", *extra], tmp_path)
    run(cfg, tmp_path)
    train = json.loads((tmp_path / "metrics.json").read_text())["train"]
    assert 0 < train["trainable_params"] < train["params"]
    ref, out = tmp_path / "data" / "demo" / "dev.json", tmp_path / "again.json"
    subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "checkpoint"), str(ref), str(out)],
                   capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.read_text()) == json.loads((tmp_path / "predictions" / "in_domain.json").read_text())
