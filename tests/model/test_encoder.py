"""Encoder factories: offline tiny BERT (vocabulary, init) and clear errors for unloadable encoders."""
import pytest
import torch

from mrc.model.encoder import build_vocab, pretrained, sinusoidal_positions, tiny_bert
from tests.conftest import FIXTURE_TEXTS


def test_built_vocab_is_deterministic_and_covers_every_character():
    v1, v2 = build_vocab(FIXTURE_TEXTS, 300), build_vocab(list(FIXTURE_TEXTS), 300)
    assert v1 == v2 and len(v1) == len(set(v1)) and v1[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert {"北", "京", "i", "##p", "cupertino"} <= set(v1)
    assert len(build_vocab(FIXTURE_TEXTS, 10)) < len(v1)  # whole words only fill the room that is left


def test_tiny_tokenizer_round_trips_mixed_text():
    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=1, hidden_size=16, heads=2, intermediate_size=32)
    text = "2019年iPhone 11在Cupertino发布"
    e = enc.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc.tokenizer.unk_token_id not in e["input_ids"]
    assert "".join(text[a:b] for a, b in e["offset_mapping"]) == text.replace(" ", "")
    assert enc.model.config.vocab_size == len(enc.tokenizer)


def test_tiny_init_is_seeded_and_positions_sinusoidal():
    kw = dict(texts=FIXTURE_TEXTS, layers=1, hidden_size=16, heads=2, intermediate_size=32)
    a, b, c = tiny_bert(seed=1, **kw), tiny_bert(seed=1, **kw), tiny_bert(seed=2, **kw)
    wa, wb, wc = (m.model.encoder.layer[0].attention.self.query.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    pos = a.model.embeddings.position_embeddings.weight
    ref = sinusoidal_positions(pos.shape[0], 16)
    assert torch.allclose(pos / pos.std(), ref / ref.std(), atol=1e-4)
    rnd = tiny_bert(position_init="random", **kw).model.embeddings.position_embeddings.weight
    assert not torch.allclose(rnd / rnd.std(), ref / ref.std(), atol=1e-2)
    with pytest.raises(ValueError, match="position_init"):
        tiny_bert(position_init="learned", **kw)


def test_tiny_needs_texts_or_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab"):
        tiny_bert(texts=None)
    with pytest.raises(FileNotFoundError, match="vocab_file"):
        tiny_bert(vocab_file=str(tmp_path / "missing.txt"))


def test_pretrained_loads_a_local_directory_and_fails_clearly_offline(tmp_path):
    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=1, hidden_size=16, heads=2, intermediate_size=32)
    enc.model.save_pretrained(tmp_path / "m")
    enc.tokenizer.save_pretrained(tmp_path / "m")
    loaded = pretrained(str(tmp_path / "m"), local_files_only=True)
    assert loaded.hidden_size == 16 and loaded.tokenizer.is_fast
    assert loaded.tokenizer("北京")["input_ids"] == enc.tokenizer("北京")["input_ids"]
    with pytest.raises(OSError, match="encoder=tiny"):
        pretrained("hfl/chinese-roberta-wwm-ext", local_files_only=True, cache_dir=str(tmp_path / "empty"))


def test_loading_weights_draws_no_bar_off_a_terminal_and_leaves_the_setting_alone(tmp_path, capsys, monkeypatch):
    """transformers' "Loading weights" bar once landed in run logs and before a command's one error: line."""
    from transformers.utils import logging as hf_logging

    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=1, hidden_size=16, heads=2, intermediate_size=32)
    enc.model.save_pretrained(tmp_path / "m")
    enc.tokenizer.save_pretrained(tmp_path / "m")
    before = hf_logging.is_progress_bar_enabled()  # a training run in this process switches it off for good
    hf_logging.enable_progress_bar()
    try:
        capsys.readouterr()
        pretrained(str(tmp_path / "m"), local_files_only=True)
        assert "Loading weights" not in capsys.readouterr().err  # captured stderr is not a terminal
        assert hf_logging.is_progress_bar_enabled()  # restored for the caller
        monkeypatch.setattr("sys.stderr.isatty", lambda: True, raising=False)
        from mrc.model import encoder

        with encoder.loading_bar_on_a_terminal_only():
            assert hf_logging.is_progress_bar_enabled()  # on a terminal the bar stays
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()


def test_keep_layers_cuts_the_encoder_and_the_cut_survives_a_save(tmp_path):
    enc = tiny_bert(texts=FIXTURE_TEXTS, layers=3, hidden_size=16, heads=2, intermediate_size=32)
    enc.model.save_pretrained(tmp_path / "m")
    enc.tokenizer.save_pretrained(tmp_path / "m")
    cut = pretrained(str(tmp_path / "m"), local_files_only=True, keep_layers=2)
    assert len(cut.model.encoder.layer) == 2 and cut.model.config.num_hidden_layers == 2
    full = pretrained(str(tmp_path / "m"), local_files_only=True)
    for kept, orig in zip(cut.model.encoder.layer, full.model.encoder.layer):  # the first layers, as pretrained
        assert all(torch.equal(a, b) for a, b in zip(kept.state_dict().values(), orig.state_dict().values()))
    cut.model.save_pretrained(tmp_path / "cut")
    cut.tokenizer.save_pretrained(tmp_path / "cut")
    again = pretrained(str(tmp_path / "cut"), local_files_only=True)
    assert len(again.model.encoder.layer) == 2
    ids = torch.tensor([enc.tokenizer("北京在哪里")["input_ids"]])
    cut.model.eval(), again.model.eval()
    assert torch.allclose(cut.model(input_ids=ids).last_hidden_state, again.model(input_ids=ids).last_hidden_state)
    for bad in (0, 4, "2"):
        with pytest.raises(ValueError, match="keep_layers"):
            pretrained(str(tmp_path / "m"), local_files_only=True, keep_layers=bad)
