"""Necks between encoder and head (issue 17): every neck with every head, saved and loaded by checkpoints
from the allow-list only."""
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from heads import HEADS
from mrc.model import checkpoint
from mrc.model.checkpoint import CheckpointError
from mrc.model.encoder import tiny_bert
from mrc.model.necks import NECKS, BiGRUNeck, LayerMixNeck
from mrc.model.span_model import SpanModel
from tests.conftest import FIXTURE_TEXTS, copy_checkpoint

NECK_ARGS = {"none": {}, "bigru": {"size": 8}, "layer_mix": {"last_n": 2}}


def tiny_encoder():
    return tiny_bert(texts=FIXTURE_TEXTS, layers=2, hidden_size=32, heads=2, intermediate_size=64, max_position=128,
                     seed=3)


def batch(tokenizer, n=2):
    enc = tokenizer(["北京是首都", "曹雪芹写了红楼梦，成书于18世纪"][:n], padding=True, return_tensors="pt")
    span_mask = enc["attention_mask"].bool().clone()
    span_mask[:, 1] = False
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": enc["token_type_ids"], "span_mask": span_mask}


def build(neck_name, head_name, enc):
    neck = NECKS[neck_name](hidden_size=enc.hidden_size, num_layers=2, **NECK_ARGS[neck_name])
    head_kw = {} if head_name == "softmax" else {"head_size": 8}
    return SpanModel(enc.model, HEADS[head_name](neck.out_size, **head_kw), neck=neck).eval()


@pytest.mark.parametrize("head_name", sorted(HEADS))
@pytest.mark.parametrize("neck_name", sorted(NECKS))
def test_every_neck_with_every_head_trains(neck_name, head_name):
    enc = tiny_encoder()
    model = build(neck_name, head_name, enc)
    b = batch(enc.tokenizer)
    b["labels"] = torch.tensor([[[2, 3]], [[0, 0]]])
    loss = model.loss(b)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.neck.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    if neck_name == "layer_mix":
        assert model.neck.weights.grad.abs().sum() > 0


def test_bigru_states_do_not_depend_on_padding():
    torch.manual_seed(0)
    neck = BiGRUNeck(hidden_size=8, size=4).eval()
    x = torch.randn(1, 5, 8)
    short = neck((x,), torch.ones(1, 5, dtype=torch.long))
    padded = neck((torch.cat([x, torch.randn(1, 3, 8)], 1),), torch.tensor([[1] * 5 + [0] * 3]))
    assert padded.shape == (1, 8, 8) and torch.allclose(short, padded[:, :5], atol=1e-6)
    assert (padded[:, 5:] == 0).all()


def test_layer_mix_starts_as_the_mean_of_its_layers_and_checks_last_n():
    states = tuple(torch.full((1, 2, 3), float(k)) for k in range(4))
    mixed = LayerMixNeck(hidden_size=3, num_layers=3, last_n=2)(states, None)
    assert torch.allclose(mixed, torch.full((1, 2, 3), 2.5))
    with pytest.raises(ValueError, match="neck.last_n must be in 1..4"):
        LayerMixNeck(hidden_size=3, num_layers=3, last_n=5)


def _save(model, enc, tmp_path, neck_cfg, head_cfg):
    cfg = OmegaConf.create({"head": head_cfg, "neck": neck_cfg, "model": {"match_feature": False},
                            "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                            "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                       "tune_on": "checklist", "save_nbest": False}})
    return checkpoint.save(tmp_path / "checkpoint", model, enc.tokenizer, cfg)


@pytest.mark.parametrize("neck_name,head_name", [("bigru", "globalpointer"), ("layer_mix", "softmax"),
                                                 ("layer_mix", "efficient_globalpointer")])
def test_a_checkpoint_with_a_neck_loads_and_scores_the_same(tmp_path, neck_name, head_name):
    enc = tiny_encoder()
    model = build(neck_name, head_name, enc)
    with torch.no_grad():
        for p in model.neck.parameters():  # not the initial values: the loaded weights must be these
            p.add_(0.1 * torch.randn_like(p))
    neck_cfg = {"_target_": f"mrc.model.necks.{type(model.neck).__name__}", **NECK_ARGS[neck_name]}
    head_class = "softmax.SoftmaxHead" if head_name == "softmax" else "globalpointer." + type(model.head).__name__
    head_cfg = {"_target_": f"heads.{head_class}",
                **({} if head_name == "softmax" else {"head_size": 8})}
    path = _save(model, enc, tmp_path, neck_cfg, head_cfg)
    loaded, tokenizer, _ = checkpoint.load(path)
    assert type(loaded.neck) is type(model.neck)
    b = batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(model(**b), loaded(**b))


def edit_yaml(ckpt, change):
    cfg = yaml.safe_load((ckpt / "mrc.yaml").read_text())
    change(cfg)
    (ckpt / "mrc.yaml").write_text(yaml.safe_dump(cfg))


def test_an_old_checkpoint_without_a_neck_loads_and_unknown_necks_are_refused(tiny_checkpoint, tmp_path):
    ckpt = copy_checkpoint(tiny_checkpoint, tmp_path)
    assert yaml.safe_load((ckpt / "mrc.yaml").read_text())["neck"] == {"name": "none"}
    edit_yaml(ckpt, lambda c: c.pop("neck"))  # the current format must name its neck
    with pytest.raises(CheckpointError, match=r"mrc\.yaml: no 'neck' section"):
        checkpoint.load(ckpt)
    edit_yaml(ckpt, lambda c: c.pop("format"))  # format 1: written before necks existed
    assert type(checkpoint.load(ckpt)[0].neck).__name__ == "NoNeck"
    for target in ("os.system", "torch.nn.GRU"):
        edit_yaml(ckpt, lambda c: c.update(neck={"_target_": target}))
        with pytest.raises(CheckpointError, match=rf"mrc\.yaml: neck\._target_ '{target}' is not one of this "
                                                  "project's necks"):
            checkpoint.load(ckpt)
    edit_yaml(ckpt, lambda c: c.update(neck={"name": "layer_mix", "last_n": {"_target_": "os.system"}}))
    with pytest.raises(CheckpointError, match=r"neck\.last_n must be a plain value"):
        checkpoint.load(ckpt)
    edit_yaml(ckpt, lambda c: c.update(neck={"name": "bigru", "hidden_size": 8}))
    with pytest.raises(CheckpointError, match=r"neck\.hidden_size is not an option of BiGRUNeck"):
        checkpoint.load(ckpt)


@pytest.mark.slow
def test_a_run_with_a_neck_and_its_checkpoint_in_mrc_predict(tmp_path):
    import json
    import subprocess
    import sys

    from mrc.train.pipeline import run
    from tests.conftest import ROOT
    from tests.train.test_e2e import DEMO, compose_cfg

    cfg = compose_cfg(DEMO + ["head=globalpointer", "neck=layer_mix", "neck.last_n=2"], tmp_path)
    run(cfg, tmp_path)
    assert yaml.safe_load((tmp_path / "checkpoint" / "mrc.yaml").read_text())["neck"]["last_n"] == 2
    ref, out = tmp_path / "data" / "demo" / "dev.json", tmp_path / "again.json"
    subprocess.run([sys.executable, "-m", "mrc", "predict", str(tmp_path / "checkpoint"), str(ref), str(out)],
                   capture_output=True, text=True, check=True, cwd=ROOT)
    assert json.loads(out.read_text()) == json.loads((tmp_path / "predictions" / "in_domain.json").read_text())


def test_layer_mix_weights_and_scale_get_no_weight_decay():
    from mrc.train.loop import build_optimizer

    model = build("layer_mix", "globalpointer", tiny_encoder())
    optim = OmegaConf.create({"encoder_lr": 1e-4, "head_lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999],
                              "eps": 1e-8, "warmup_ratio": 0.1})
    opt, _ = build_optimizer(model, optim, total_steps=10)
    decay = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.neck.weights) not in decay and id(model.neck.gamma) not in decay
    assert id(model.head.proj.weight) in decay
