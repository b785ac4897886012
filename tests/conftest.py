"""Shared fixtures: offline, no W&B network, a tiny tokenizer built from the fixtures' own text."""
import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI explores the same examples every run (no flaky landings); locally each run draws new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _no_wandb_network(monkeypatch):
    # Tests never talk to W&B; a test that wants offline files sets WANDB_MODE=offline itself.
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setenv("WANDB_SILENT", "true")


FIXTURE_TEXTS = [
    "2019年iPhone 11在Cupertino发布，价格６９９９元。",
    "北京是中华人民共和国的首都，人口约2189万人。",
    "《红楼梦》的作者是曹雪芹，成书于18世纪中叶。",
    "Apple公司的邮箱是info@apple.com，电话是400-666-8800。",
    "ＡＢＣ全角字母、full-width！标点？“引号”与（括号）",
]


@pytest.fixture(scope="session")
def tokenizer():
    """A fast WordPiece tokenizer whose vocabulary is built from FIXTURE_TEXTS plus ASCII."""
    from mrc.model.encoder import tiny_bert

    import string
    extra = [" ".join(string.ascii_letters + string.digits), "的是在了和有人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质信"]
    return tiny_bert(texts=FIXTURE_TEXTS + extra).tokenizer


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny softmax checkpoint (1 layer x 32), saved once per session; copy it before editing."""
    from omegaconf import OmegaConf

    from heads.softmax import SoftmaxHead
    from mrc.model import checkpoint
    from mrc.model.encoder import tiny_bert
    from mrc.model.span_model import SpanModel

    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=1, hidden_size=32, heads=2, intermediate_size=64, max_position=128)
    cfg = OmegaConf.create({"head": {"_target_": "heads.softmax.SoftmaxHead", "dropout": 0.1},
                            "model": {"match_feature": False},
                            "data": {"max_len": 64, "max_query_len": 16, "doc_stride": 16},
                            "decode": {"max_answer_len": 16, "n_best": 5, "null_threshold": None,
                                       "tune_on": "checklist", "save_nbest": False}})
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint"
    return checkpoint.save(path, SpanModel(enc.model, SoftmaxHead(enc.hidden_size)), enc.tokenizer, cfg)


def copy_checkpoint(src, tmp_path):
    """A private copy of a checkpoint directory (tests edit it)."""
    import shutil

    return Path(shutil.copytree(src, tmp_path / "ckpt"))
