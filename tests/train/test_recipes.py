"""Training recipes (issue 49): ``optim.layer_decay``, ``trainer.ema``, ``trainer.adversarial`` (fgm / pgd) and
``trainer.rdrop``. Each changes training (or, for the EMA, the evaluated weights), trains every head, composes
with the fine-tuning modes and distillation, survives save -> load -> predict and an exact resume, and a bad
value is refused in one line."""
import json
import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from heads import HEADS
from mrc.data.batching import collate
from mrc.data.squad import load_squad
from mrc.eval.predict import predict
from mrc.model import checkpoint
from mrc.model.distill import Distiller, score_kind, symmetric_kl
from mrc.model.encoder import tiny_bert
from mrc.model.finetune import FINETUNES
from mrc.model.span_model import SpanModel
from mrc.train.distributed import Dist
from mrc.train.inputs import ConfigError
from mrc.train.loop import TrainLoop, build_optimizer
from mrc.train.pipeline import run
from mrc.train.recipes import Adversary, Recipes, WeightAverage, check
from mrc.train.resume import ResumeError, Resumer, RunProgress, check_compatible, config_items, load_state
from tests.train.test_e2e import DEMO, compose_cfg
from tests.train.test_resume import TRAINER, outputs, windows, with_overrides
from tests.train.test_loop import OPTIM

HEAD_KW = {"softmax": {}, "globalpointer": {"head_size": 8}, "efficient_globalpointer": {"head_size": 8}}
RECIPES = {"layer_decay": {"optim": {"layer_decay": 0.5}}, "ema": {"trainer": {"ema": 0.9}},
           "fgm": {"trainer": {"adversarial": "fgm"}},
           "pgd": {"trainer": {"adversarial": "pgd", "adversarial_steps": 2}}, "rdrop": {"trainer": {"rdrop": 1.0}}}
ALL = {"optim": {"layer_decay": 0.5}, "trainer": {"ema": 0.9, "adversarial": "pgd", "adversarial_steps": 2,
                                                  "rdrop": 1.0}}
KW = dict(pad_id=0, device="cpu")


def options(over: dict | None = None):
    base = OmegaConf.create({"seed": 1, "optim": OPTIM, "decode": {"save_nbest": False},
                             "data": {"in_domain": "in_domain"}, "trainer": {**TRAINER, "epochs": 1}})
    return OmegaConf.merge(base, over or {})


def tiny(head: str = "softmax", seed: int = 0, finetune: str = "full") -> SpanModel:
    torch.manual_seed(seed)
    enc = tiny_bert(texts=["北京是中国的首都"], layers=2, hidden_size=16, heads=2, intermediate_size=32)
    model = SpanModel(enc.model, HEADS[head](16, **HEAD_KW[head]))  # dropout on: R-Drop's passes differ
    FINETUNES[finetune]().apply(model)
    return model


def train(model: SpanModel, over: dict | None = None, **kw):
    """One epoch of 40 windows (5 optimizer steps of 2 x 4 windows) under ``over``."""
    cfg = options(over)
    opt, sched = build_optimizer(model, cfg.optim, 5)
    recipes = Recipes.build(model, cfg)
    torch.manual_seed(7)
    loop = TrainLoop(model, opt, sched, cfg.trainer, recipes=recipes, **KW, **kw)
    ep, steps = loop.run_epoch(windows(40), epoch=1, step=0)
    assert steps == 5 and torch.isfinite(torch.tensor(ep["loss"]))
    return ep, recipes


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("head", sorted(HEADS))
def test_every_head_trains_with_each_recipe_and_it_changes_training(head, recipe):
    plain = tiny(head)
    base, _ = train(plain)
    model = tiny(head)
    ep, recipes = train(model, RECIPES[recipe])
    if recipe != "ema":
        assert not same(weights(model), weights(plain))
        if recipe in ("fgm", "pgd", "rdrop"):  # the recipe's terms change the loss from the first step on
            assert ep["loss"] != base["loss"]
        return
    # the EMA leaves the training trajectory alone and changes the weights that are evaluated and saved
    trained = weights(model)
    assert same(trained, weights(plain)) and ep["loss"] == base["loss"]
    with recipes.evaluation_weights():
        averaged = weights(model)
        assert all(torch.equal(p, s) for p, s in zip(recipes.ema.params, recipes.ema.shadow))
    assert not same(averaged, trained) and same(weights(model), trained)  # restored exactly


@pytest.mark.parametrize("finetune", ["frozen", "adapters", "lora"])
def test_recipes_compose_with_the_finetune_modes(finetune):
    model = tiny("efficient_globalpointer", finetune=finetune)
    frozen = {k: v for k, v in weights(model).items() if k.startswith("encoder.") and "lora_" not in k
              and "LayerNorm" not in k}
    _, recipes = train(model, ALL)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert recipes.ema.names == trainable  # only what trains is averaged
    now = weights(model)
    assert all(torch.equal(now[k], v) for k, v in frozen.items())  # the adversary never touches a weight
    assert not model.encoder.get_input_embeddings()._forward_hooks


@pytest.mark.slow
@pytest.mark.parametrize("head", ["softmax", "efficient_globalpointer"])
def test_recipes_compose_with_distillation(head):
    model = tiny(head)
    model.distiller = Distiller(tiny(head, seed=3), 0.5, 2.0, score_kind(model.head), model.head)
    plain = tiny(head)
    plain.distiller = Distiller(tiny(head, seed=3), 0.5, 2.0, score_kind(plain.head), plain.head)
    base, _ = train(plain)
    ep, _ = train(model, ALL)
    assert ep["loss"] != base["loss"]


def test_layer_decay_gives_each_layer_its_rate():
    model = tiny("globalpointer")  # 2 layers
    cfg = options({"optim": {"layer_decay": 0.5}})
    opt, _ = build_optimizer(model, cfg.optim, 5)
    lrs = {g["name"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs == {"encoder.embeddings": 2.5e-5, "encoder.layer0": 5e-5, "encoder.layer1": 1e-4,
                   "encoder_no_decay.embeddings": 2.5e-5, "encoder_no_decay.layer0": 5e-5,
                   "encoder_no_decay.layer1": 1e-4, "head": 1e-2, "head_no_decay": 1e-2}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        tag = group["name"].split(".")[-1]
        assert all(tag in names[id(p)].replace("layer.", "layer") for p in group["params"] if "." in group["name"])
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each exactly once
    # off (1.0, or an optim section from before the option): the four groups as before
    opt, _ = build_optimizer(model, OPTIM, 5)
    assert [g["name"] for g in opt.param_groups] == ["encoder", "encoder_no_decay", "head", "head_no_decay"]
    # LoRA's new weights inside the encoder (the only encoder weights that train) keep the head's rate
    lora = tiny("softmax", finetune="lora")
    opt, _ = build_optimizer(lora, cfg.optim, 5)
    lrs = {g["name"]: g["initial_lr"] for g in opt.param_groups}
    assert lrs == {"head": 1e-2, "head_no_decay": 1e-2}
    assert any("lora_" in n for n, p in lora.named_parameters() if any(p is q for q in opt.param_groups[0]["params"]))


@pytest.mark.parametrize("over,message", [
    ({"optim": {"layer_decay": 0}}, r"optim\.layer_decay=0: must be a number in \(0, 1\]"),
    ({"optim": {"layer_decay": 1.5}}, r"optim\.layer_decay=1\.5"),
    ({"optim": {"layer_decay": "x"}}, r"optim\.layer_decay='x'"),
    ({"trainer": {"ema": 1.0}}, r"trainer\.ema=1\.0: must be null or 0 \(off\) or a decay in \(0, 1\)"),
    ({"trainer": {"ema": -0.5}}, r"trainer\.ema=-0\.5"),
    ({"trainer": {"adversarial": "fgsm"}}, r"trainer\.adversarial='fgsm': must be one of none, fgm, pgd"),
    ({"trainer": {"adversarial": "fgm", "adversarial_eps": 0}}, r"trainer\.adversarial_eps=0: must be a number > 0"),
    ({"trainer": {"adversarial": "pgd", "adversarial_steps": 0}}, r"trainer\.adversarial_steps=0: must be an integer"),
    ({"trainer": {"rdrop": -1}}, r"trainer\.rdrop=-1: must be a number >= 0"),
])
def test_bad_values_are_refused_in_one_line(over, message):
    with pytest.raises(ConfigError, match=message) as err:
        check(options(over))
    assert "\n" not in str(err.value)
    if "optim" in over:  # also where the optimizer is built
        with pytest.raises(ConfigError, match=message):
            build_optimizer(tiny(), options(over).optim, 5)


def test_a_run_refuses_a_bad_recipe_before_the_data(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer\.rdrop=-0\.5"):
        run(compose_cfg(DEMO + ["trainer.rdrop=-0.5"], tmp_path), tmp_path)
    assert not (tmp_path / "data").exists()


def test_adversary_adds_gradients_and_leaves_nothing_behind():
    batch = collate(windows(8), 0)
    for method, steps in (("fgm", 1), ("pgd", 3)):
        model = tiny("globalpointer")
        before = weights(model)
        model.loss(batch).backward()
        clean = {n: p.grad.clone() for n, p in model.named_parameters()}
        model.zero_grad()
        adversary = Adversary(model, method, eps=0.5, steps=steps)
        torch.manual_seed(0)
        with adversary.watching():
            model.loss(batch).backward()
        adversary.attack(lambda: model.loss(batch), lambda loss: loss.backward())
        assert any(not torch.equal(p.grad, clean[n]) for n, p in model.named_parameters())
        assert same(weights(model), before) and not adversary.module._forward_hooks and adversary.outputs == []
    # the perturbation has norm eps per window (fgm), and pgd's stays inside the ball
    grad = torch.randn(3, 5, 4)
    assert torch.allclose(adversary._step(grad, None, 0.5).flatten(1).norm(dim=1), torch.full((3,), 0.5))
    delta = adversary._step(grad, adversary._step(grad, None, 0.4), 0.4)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.full((3,), 0.5))


def test_rdrop_kl_goes_through_the_head_and_only_in_training():
    batch = collate(windows(6), 0)
    for head in HEADS:
        model = tiny(head)
        a, b = model(**batch), model(**batch)  # dropout: two different passes
        kind, mask = score_kind(model.head), batch["span_mask"]
        kl = symmetric_kl(a, b, mask, kind)
        assert kl > 0 and torch.allclose(kl, symmetric_kl(b, a, mask, kind))
        assert symmetric_kl(a, a, mask, kind) == 0
        if kind == "grid":  # a cell outside the valid spans holds no probability
            edited = a.clone()
            edited[:, 2, 1] = 5.0  # end before start
            assert torch.equal(symmetric_kl(edited, b, mask, kind), kl)
        model.rdrop = 1.0
        torch.manual_seed(0)
        with_kl = model.loss(batch)
        model.rdrop = 0.0
        torch.manual_seed(0)
        assert model.loss(batch) != with_kl
        model.eval()
        model.rdrop = 1.0
        plain = model.loss(batch)
        model.rdrop = 0.0
        assert torch.equal(model.loss(batch), plain)  # evaluation: one pass, no KL


def test_weight_average_follows_the_warmed_up_decay_and_swaps_exactly():
    model = torch.nn.Linear(3, 2)
    ema = WeightAverage(model, 0.9)
    w0 = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update()  # decay min(0.9, 1 / 10) = 0.1
    assert torch.allclose(ema.shadow[0], 0.1 * w0 + 0.9 * model.weight.detach())
    for _ in range(30):
        ema.update()
    assert ema.updates == 31
    state = ema.state_dict()
    other = WeightAverage(model, 0.9)
    other.load_state_dict(state)
    assert other.updates == 31 and all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow))
    raw = weights(model)
    with ema.applied():
        assert torch.equal(model.weight, ema.shadow[0])
    assert same(weights(model), raw)


@pytest.mark.parametrize("head", sorted(HEADS))
def test_save_load_predict_with_every_recipe(head, tmp_path):
    model = tiny(head)
    _, recipes = train(model, ALL)
    enc_tokenizer = tiny_bert(texts=["北京是中国的首都"], layers=1, hidden_size=16, heads=2,
                              intermediate_size=32).tokenizer
    cfg = OmegaConf.create({"head": {"_target_": f"{type(model.head).__module__}.{type(model.head).__name__}",
                                     **HEAD_KW[head]},
                            "model": {"match_feature": False},
                            "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                            "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                       "tune_on": "checklist", "save_nbest": False}})
    batch = collate(windows(6, seed=3), 0)
    model.eval()
    with recipes.evaluation_weights():
        checkpoint.save(tmp_path / "ckpt", model, enc_tokenizer, cfg)
        expected = model(**batch)
    loaded, _, _ = checkpoint.load(tmp_path / "ckpt")
    assert torch.allclose(loaded(**batch), expected, atol=1e-5)
    assert not torch.allclose(model(**batch), expected, atol=1e-5)  # the raw weights score otherwise


@pytest.mark.parametrize("head", sorted(HEADS))
def test_train_epoch_with_every_recipe_resumes_exactly_from_a_state_file(head, tmp_path):
    cfg = options(ALL)
    model = tiny(head)
    opt, sched = build_optimizer(model, cfg.optim, 5)
    recipes = Recipes.build(model, cfg)
    first = Resumer(cfg, tmp_path, model, opt, sched, Dist(), ema=recipes.ema)
    run_state = RunProgress()

    def save_at_2(step, progress):
        if step == 2:
            run_state.step = step
            first.save(run_state, 1, progress)

    torch.manual_seed(7)
    full, _ = TrainLoop(model, opt, sched, cfg.trainer, recipes=recipes, **KW).run_epoch(
        windows(40), epoch=1, step=0, on_resume_point=save_at_2)
    assert load_state(tmp_path / "resume" / "state.pt")["ema"]["updates"] == 2
    again = tiny(head, seed=5)
    opt2, sched2 = build_optimizer(again, cfg.optim, 5)
    recipes2 = Recipes.build(again, cfg)
    epoch, progress, restored = Resumer(cfg, tmp_path, again, opt2, sched2, Dist(), ema=recipes2.ema).restore()
    assert (epoch, progress.batch, restored.step) == (1, 4, 2)
    rest, steps = TrainLoop(again, opt2, sched2, cfg.trainer, recipes=recipes2, **KW).run_epoch(
        windows(40), epoch=1, step=2, start=progress)
    assert steps == 5 and rest["loss"] == full["loss"] and same(weights(again), weights(model))
    assert recipes2.ema.updates == recipes.ema.updates == 5
    assert all(torch.equal(a, b) for a, b in zip(recipes2.ema.shadow, recipes.ema.shadow))


def test_an_old_state_resumes_with_the_recipes_off(tmp_path):
    cfg = compose_cfg(DEMO, tmp_path)
    new = ("optim.layer_decay", "trainer.ema", "trainer.rdrop", "trainer.adversarial")
    old = {"version": 1, "world_size": 1,  # a version-1 state written before the recipes
           "config": json.dumps({k: v for k, v in config_items(cfg).items() if not k.startswith(new)})}
    check_compatible(old, cfg, Dist(), Path("state.pt"))
    with pytest.raises(ResumeError, match=r"trainer\.ema"):
        check_compatible(old, compose_cfg(DEMO + ["trainer.ema=0.999"], tmp_path), Dist(), Path("state.pt"))


class Stop(Exception):
    """The run 'killed' after its first mid-epoch state."""


@pytest.mark.slow
def test_a_run_with_every_recipe_resumes_exactly_and_its_checkpoint_predicts(tmp_path, monkeypatch, caplog):
    over = with_overrides(DEMO, ["head=efficient_globalpointer", "data.prepare.n_train=80", "trainer.batch_size=8",
                                 "data.eval_splits=[in_domain]", "trainer.epochs=2", "trainer.resume_every=3",
                                 "trainer.eval_each_epoch=false",  # the checkpoint is the last epoch's
                                 "trainer.ema=0.9", "trainer.adversarial=pgd", "trainer.adversarial_steps=2",
                                 "trainer.rdrop=1.0", "optim.layer_decay=0.8"])
    caplog.set_level(logging.INFO, logger="mrc.train.recipes")
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    run(compose_cfg(over, ref), ref)
    metrics = json.loads((ref / "metrics.json").read_text())
    assert metrics["train"]["recipes"] == {"layer_decay": 0.8, "ema": 0.9, "rdrop": 1.0,
                                           "adversarial": {"method": "pgd", "eps": 1.0, "steps": 2}}
    assert "evaluation and the saved checkpoint use the exponential moving average" in caplog.text
    final, span = load_state(ref / "resume" / "state.pt"), load_file(str(ref / "checkpoint" / "span.safetensors"))
    head = [k for k in span if k.startswith("head.")]
    assert head and all(torch.equal(span[k], final["ema"]["shadow"][k]) for k in head)  # saved: the average
    assert not all(torch.equal(span[k], final["model"][k]) for k in head)  # not the last step's weights
    save = Resumer.save

    def save_then_stop(self, run_state, epoch, progress):
        save(self, run_state, epoch, progress)
        raise Stop

    monkeypatch.setattr(Resumer, "save", save_then_stop)
    with pytest.raises(Stop):
        run(compose_cfg(over, killed), killed)
    monkeypatch.undo()
    assert "ema" in load_state(killed / "resume" / "state.pt")
    run(compose_cfg(over, killed), killed)
    assert json.loads((killed / "metrics.json").read_text())["train"]["resumed"][0]["batch"] > 0
    assert outputs(killed) == outputs(ref)
    assert same(load_file(str(killed / "checkpoint" / "span.safetensors")),
                load_file(str(ref / "checkpoint" / "span.safetensors")))
    # the checkpoint holds the averaged weights the run evaluated: it predicts what the run predicted
    model, tokenizer, cfg = checkpoint.load(ref / "checkpoint")
    examples, _ = load_squad(ref / "data" / "demo" / "dev.json", training=False)
    preds, _ = predict(model, tokenizer, cfg, examples)
    assert preds == json.loads((ref / "predictions" / "in_domain.json").read_text())
