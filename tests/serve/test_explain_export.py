"""mrc explain writes the pictures; mrc export's ONNX graph and --quantize int8 answer like fp32 for every head,
through mrc predict and mrc.serve."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from mrc.data.squad import Example
from mrc.eval.predict import load_for_inference, main as predict_main, predict
from mrc.serve import explain as explain_mod
from mrc.serve.export import main as export_main
from tests.conftest import FIXTURE_TEXTS
from tests.serve.helpers import CONTEXT, QUESTIONS, make_checkpoint

HEADS = ["softmax", "globalpointer", "efficient_globalpointer"]
PNG = b"\x89PNG\r\n\x1a\n"
# A small split: every question over every context (short ones, one window, and the long one, several).
SPLIT = [Example(f"{i}-{j}", q, c, [], []) for i, c in enumerate(FIXTURE_TEXTS + [CONTEXT])
         for j, q in enumerate(QUESTIONS + ["谁？", "多少？", "哪里？", "什么时候？"])]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    return {head: make_checkpoint(root / head, head) for head in HEADS}


@pytest.fixture(scope="module")
def onnx_files(checkpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for head, ckpt in checkpoints.items():
        files[head] = root / f"{head}.onnx"
        assert export_main([str(ckpt), "--onnx", str(files[head])]) == 0
    return files


def agreement(a: dict, b: dict) -> float:
    return sum(a[k] == b[k] for k in a) / len(a)


@pytest.mark.slow
@pytest.mark.parametrize("head", HEADS)
def test_int8_and_onnx_agree_with_fp32(checkpoints, onnx_files, head):
    ckpt = checkpoints[head]
    fp32, nb32 = predict(*load_for_inference(ckpt), SPLIT)
    int8, _ = predict(*load_for_inference(ckpt, quantize="int8"), SPLIT)
    onnx, nbx = predict(*load_for_inference(ckpt, onnx=onnx_files[head]), SPLIT)
    assert agreement(fp32, int8) >= 0.95 and agreement(fp32, onnx) >= 0.95
    for k in fp32:  # ONNX Runtime computes the same scores (to float noise)
        assert [c["text"] for c in nbx[k]["candidates"]][:1] == [c["text"] for c in nb32[k]["candidates"]][:1]
        assert nbx[k]["candidates"][0]["score"] == pytest.approx(nb32[k]["candidates"][0]["score"], abs=1e-3)


@pytest.mark.parametrize("head", HEADS)
def test_bf16_encoder_agrees_with_fp32(checkpoints, head):
    import torch

    from mrc.model.quantize import Bf16Encoder

    ckpt = checkpoints[head]
    model, tok, cfg = load_for_inference(ckpt, quantize="bf16")
    assert isinstance(model.encoder, Bf16Encoder)
    fp32_model = load_for_inference(ckpt)[0]
    batch = tok(["北京在哪里", "公司成立于哪一年"], ["北京是中国的首都。", "公司成立于1998年。"], padding=True,
                return_tensors="pt")
    with torch.inference_mode():
        ref = fp32_model.encoder(**batch).last_hidden_state
        out = model.encoder(**batch, output_hidden_states=True)
    assert out.last_hidden_state.dtype == torch.float32 and all(h.dtype == torch.float32 for h in out.hidden_states)
    assert torch.allclose(out.last_hidden_state, ref, atol=0.1) and not torch.equal(out.last_hidden_state, ref)
    fp32, _ = predict(fp32_model, tok, cfg, SPLIT)
    bf16, _ = predict(model, tok, cfg, SPLIT)
    assert agreement(fp32, bf16) >= 0.9


def test_bf16_warns_on_a_cpu_without_bf16_units(checkpoints, monkeypatch):
    from mrc.model import quantize

    monkeypatch.setattr(quantize, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="no AVX512-BF16 / AMX"):
        load_for_inference(checkpoints["softmax"], quantize="bf16")


def test_bf16_warns_on_a_cpu_with_avx512_bf16_but_no_amx(checkpoints, monkeypatch):
    """Measured on a Xeon with AVX512-BF16 and no AMX: bf16 inference 0.67x fp32; the option says so there."""
    from mrc.model import quantize

    monkeypatch.setattr(quantize, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(quantize, "bf16_units", lambda: ["avx512_bf16"])
    with pytest.warns(UserWarning, match="AVX512-BF16 but no AMX.*0.67x"):
        load_for_inference(checkpoints["softmax"], quantize="bf16")
    monkeypatch.setattr(quantize, "bf16_units", lambda: ["avx512_bf16", "amx_bf16"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an AMX host: no warning
        load_for_inference(checkpoints["softmax"], quantize="bf16")


def test_fast_option_lists_agree():
    from mrc.model.quantize import QUANTIZE
    from mrc.serve import cli

    assert cli.QUANTIZE == explain_mod.QUANTIZE == QUANTIZE == ("int8", "bf16")


def test_predict_cli_fast_options(checkpoints, onnx_files, tmp_path, capsys):
    data = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [{"id": f"q{i}", "question": q, "answers": []}
                                                                  for i, q in enumerate(QUESTIONS)]}]}]}
    src = tmp_path / "in.json"
    src.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    ckpt = checkpoints["globalpointer"]
    outs = {}
    for name, extra in (("fp32", []), ("int8", ["--quantize", "int8"]), ("bf16", ["--quantize", "bf16"]),
                        ("onnx", ["--onnx", str(onnx_files["globalpointer"])])):
        out = tmp_path / f"{name}.json"
        assert predict_main([str(ckpt), str(src), str(out), *extra]) == 0
        outs[name] = json.loads(out.read_text(encoding="utf-8"))
    assert outs["fp32"] == outs["onnx"] and agreement(outs["fp32"], outs["int8"]) >= 0.75
    assert agreement(outs["fp32"], outs["bf16"]) >= 0.75
    # an ONNX file exported from another checkpoint is refused in one line
    capsys.readouterr()
    assert predict_main([str(ckpt), str(src), str(tmp_path / "x.json"), "--onnx", str(onnx_files["softmax"])]) == 2
    assert "exported from other weights" in capsys.readouterr().err
    assert predict_main([str(ckpt), str(src), str(tmp_path / "x.json"), "--onnx", str(tmp_path / "nope.onnx")]) == 2
    assert "no such ONNX file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the two options exclude each other
        predict_main([str(ckpt), str(src), str(tmp_path / "x.json"), "--quantize", "int8", "--onnx", "f.onnx"])


def test_serve_with_onnx_and_int8_explains(checkpoints, onnx_files):
    from fastapi.testclient import TestClient

    from mrc.serve.app import create_app

    for head, kw, backend in (("softmax", {"onnx": onnx_files["softmax"]}, "onnx"),
                              ("efficient_globalpointer", {"onnx": onnx_files["efficient_globalpointer"]}, "onnx"),
                              ("globalpointer", {"quantize": "int8"}, "int8"),
                              ("softmax", {"quantize": "bf16"}, "bf16")):
        model, tok, cfg = load_for_inference(checkpoints[head], **kw)
        c = TestClient(create_app(model, tok, cfg, backend=backend), raise_server_exceptions=False,
                       base_url="http://127.0.0.1")  # a loopback Host: the server refuses others
        assert c.get("/api/info").json()["backend"] == backend
        d = c.post("/api/explain", json={"context": CONTEXT, "question": QUESTIONS[1]}).json()
        assert d["result"]["answer"] and d["view"] == ("tokens" if head == "softmax" else "grid")


@pytest.mark.slow
def test_explain_writes_pngs_for_softmax_and_gp(checkpoints, tmp_path, capsys):
    out = tmp_path / "softmax"
    assert explain_mod.main([str(checkpoints["softmax"]), "--question", QUESTIONS[0], "--context", CONTEXT,
                             "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["answer"] and len(printed["files"]) == 2
    for name in ("scores.png", "windows.png"):
        assert (out / name).read_bytes()[:8] == PNG and (out / name).stat().st_size > 2000
    assert json.loads((out / "explain.json").read_text(encoding="utf-8"))["view"] == "tokens"
    # from a SQuAD file by id, GlobalPointer, a chosen window
    data = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [{"id": "a1", "question": QUESTIONS[2], "answers": []}]}]}]}
    src = tmp_path / "dev.json"
    src.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "gp"
    assert explain_mod.main([str(checkpoints["globalpointer"]), "--input", str(src), "--id", "a1", "--out", str(out),
                             "--window", "1"]) == 0
    assert (out / "scores.png").read_bytes()[:8] == PNG
    saved = json.loads((out / "explain.json").read_text(encoding="utf-8"))
    assert saved["view"] == "grid" and saved["window"] == 1
    assert explain_mod.main([str(checkpoints["globalpointer"]), "--input", str(src), "--id", "zz", "--out", str(out)]) == 2
    assert "no question with id 'zz'" in capsys.readouterr().err
    assert explain_mod.main([str(checkpoints["globalpointer"]), "--input", str(src), "--id", "a1", "--out", str(out),
                             "--window", "50"]) == 2


def test_explain_without_a_cjk_font_labels_tokens_by_index(checkpoints, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(explain_mod, "cjk_font", lambda: None)
    model, tok, cfg = load_for_inference(checkpoints["efficient_globalpointer"])
    data = explain_mod.explain(model, tok, cfg, CONTEXT, QUESTIONS[0])
    with caplog.at_level(logging.INFO, logger="mrc.explain"):
        files = explain_mod.draw(data, CONTEXT, tmp_path)
    assert "labelled by index" in caplog.text
    assert all(f.read_bytes()[:8] == PNG for f in files)


def test_int8_keeps_the_down_projections_in_fp32(checkpoints):
    """int8 quantises every encoder Linear except the feed-forward down-projections (in > out features), whose
    post-GELU inputs lost e5_small 12 F1 when quantised (experiments/inference/README.md)."""
    from torch import nn

    model, _, _ = load_for_inference(checkpoints["softmax"], quantize="int8")
    linear = {n: m for n, m in model.encoder.named_modules() if type(m) is nn.Linear}
    quantised = {n: m for n, m in model.encoder.named_modules() if "quantized" in type(m).__module__
                 and type(m).__name__ == "Linear"}
    assert linear and quantised
    assert all(m.in_features > m.out_features for m in linear.values())
    assert all(m.in_features <= m.out_features for m in quantised.values())


def test_onnx_int8_export_quantises_the_encoder_and_answers_like_fp32(checkpoints, onnx_files, tmp_path):
    """mrc export --quantize int8: ONNX Runtime int8 of the encoder's weight MatMuls (not the attention-score
    products, not the head), loadable by --onnx like the fp32 file, answering like fp32."""
    import onnx

    from mrc.serve.export import encoder_weight_matmuls

    ckpt = checkpoints["globalpointer"]
    out = tmp_path / "int8.onnx"
    assert export_main([str(ckpt), "--onnx", str(out), "--quantize", "int8"]) == 0
    graph = onnx.load(str(out))
    ops = {n.op_type for n in graph.graph.node}
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops  # int8 kernels are in the graph
    fp32_graph = onnx.load(str(onnx_files["globalpointer"])).graph
    picked = encoder_weight_matmuls(fp32_graph)
    kinds = {n.name: n.op_type for n in fp32_graph.node}
    assert picked and all("/encoder/" in n or kinds[n] == "Attention" for n in picked)
    assert sum(kinds[n] == "Attention" for n in picked) == 2  # the fused Q/K/V projection of both layers
    head = [n.name for n in fp32_graph.node if n.op_type == "MatMul" and "/head/" in n.name]
    assert head and not set(head) & set(picked)  # the head stays fp32
    down = [n.name for n in fp32_graph.node if n.op_type == "MatMul" and "/output/dense/" in n.name
            and "/attention/" not in n.name]
    assert len(down) == 2 and not set(down) & set(picked)  # the feed-forward down-projections stay fp32
    assert len(picked) == 2 * 3  # per layer: Q/K/V (fused), attention output, feed-forward input
    fp32, _ = predict(*load_for_inference(ckpt), SPLIT)
    int8, _ = predict(*load_for_inference(ckpt, onnx=out), SPLIT)
    assert agreement(fp32, int8) >= 0.9


@pytest.mark.parametrize("head", HEADS)
def test_export_fuses_attention_and_layer_norms_for_every_head(onnx_files, head):
    """The default export runs ONNX Runtime's transformer optimizer: one fused Attention node per encoder layer
    (the torch SDPA graph has none, its NaN guards block the match), residual + LayerNorm and bias + GELU fused,
    and the metadata survives (mrc.optimized names it). The scores were checked against torch by the export."""
    import onnx

    graph = onnx.load(str(onnx_files[head]))
    ops = [n.op_type for n in graph.graph.node]
    assert ops.count("Attention") == 2 and ops.count("SkipLayerNormalization") == 4 and ops.count("BiasGelu") == 2
    meta = {m.key: m.value for m in graph.metadata_props}
    assert meta["mrc.optimized"] == "true" and meta["mrc.head"] and "mrc.weights_sha256" in meta


def test_export_without_the_optimizer_keeps_the_plain_graph(checkpoints, tmp_path, capsys):
    import onnx

    out = tmp_path / "plain.onnx"
    assert export_main([str(checkpoints["softmax"]), "--onnx", str(out), "--no-optimize"]) == 0
    assert "fused: none" in capsys.readouterr().err
    graph = onnx.load(str(out))
    assert not {"Attention", "SkipLayerNormalization"} & {n.op_type for n in graph.graph.node}
    assert {m.key: m.value for m in graph.metadata_props}["mrc.optimized"] == "false"


def test_an_export_that_fails_its_check_leaves_no_file(checkpoints, tmp_path, monkeypatch, capsys):
    """The graph is written under a hidden temporary name and renamed only after ONNX Runtime matched torch: a
    failed check (here forced) leaves neither the final file nor the temporary one; an existing file survives."""
    from mrc.model.quantize import FastModelError
    from mrc.serve import export

    def unfaithful(*a, **k):
        raise FastModelError("ONNX Runtime differs from torch by 1.00e+00 > 0.001; the export is not faithful")

    monkeypatch.setattr(export, "verify", unfaithful)
    out = tmp_path / "m.onnx"
    assert export_main([str(checkpoints["softmax"]), "--onnx", str(out)]) == 2
    assert "not faithful" in one_error_line(capsys)  # no weight-loading bar before it either
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"an earlier export")
    assert export_main([str(checkpoints["softmax"]), "--onnx", str(out), "--quantize", "int8"]) == 2
    assert out.read_bytes() == b"an earlier export" and sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


# ---------------------------------------------------------------- bad output options: one line, before any work

def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err[-2000:]
    return err


@pytest.mark.parametrize("opset", [3, 13, 99])
def test_export_refuses_an_opset_the_graph_or_exporter_cannot_use(checkpoints, tmp_path, capsys, opset):
    """--opset 3 once ended in the exporter's traceback (the encoders' attention needs opset 14)."""
    from mrc.serve.export import opset_range

    out = tmp_path / "m.onnx"
    assert export_main([str(checkpoints["softmax"]), "--onnx", str(out), "--opset", str(opset)]) == 2
    low, high = opset_range()
    assert one_error_line(capsys) == (f"error: --opset {opset}: this graph exports at opset {low}..{high} with the "
                                      "installed torch (default 17); pick one in that range")
    assert not out.exists()


def test_export_at_the_lowest_opset_in_range_works(checkpoints, tmp_path):
    from mrc.serve.export import MIN_OPSET

    assert export_main([str(checkpoints["softmax"]), "--onnx", str(tmp_path / "m.onnx"),
                        "--opset", str(MIN_OPSET)]) == 0


def bad_output_paths(tmp_path):
    """A directory, a path under a file, and (on Linux) a place no file can be created."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a directory")
    a_dir = tmp_path / "a_dir.onnx"
    a_dir.mkdir()
    paths = {"dir": a_dir, "under_file": a_file / "x", "a_file": a_file}
    if Path("/proc/self").is_dir():
        paths["unwritable"] = Path("/proc/mrc-test/x")
    return paths


def test_export_refuses_an_onnx_path_it_cannot_write(checkpoints, tmp_path, capsys):
    paths = bad_output_paths(tmp_path)
    expected = {"dir": f"error: --onnx {paths['dir']} is a directory; give the file to write "
                       f"(e.g. {paths['dir'] / 'model.onnx'})",
                "under_file": f"error: --onnx {paths['under_file']}: {paths['a_file']} is a file, not a directory; "
                              "choose another --onnx",
                "unwritable": f"error: --onnx {paths.get('unwritable')}: cannot write in /proc ("}
    for kind, message in expected.items():
        if kind in paths:
            assert export_main([str(checkpoints["softmax"]), "--onnx", str(paths[kind])]) == 2
            assert one_error_line(capsys).startswith(message), kind
    assert paths["a_file"].read_text() == "not a directory"


def test_explain_refuses_an_out_dir_it_cannot_write(checkpoints, tmp_path, capsys):
    paths = bad_output_paths(tmp_path)
    expected = {"a_file": f"error: --out {paths['a_file']} is a file, not a directory; give a directory for "
                          "scores.png, windows.png and explain.json",
                "under_file": f"error: --out {paths['under_file']}: {paths['a_file']} is a file, not a directory; "
                              "choose another --out",
                "unwritable": f"error: --out {paths.get('unwritable')}: cannot write in /proc ("}
    for kind, message in expected.items():
        if kind in paths:
            assert explain_mod.main([str(checkpoints["softmax"]), "--question", QUESTIONS[0], "--context", CONTEXT,
                                     "--out", str(paths[kind])]) == 2
            assert one_error_line(capsys).startswith(message), kind
