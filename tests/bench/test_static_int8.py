"""experiments/inference/static_int8.py: static int8 quantises the activations of the chosen weight products (not
the weights alone), keeps the down-projections fp32 when asked, and writes a graph that answers like an export."""
from __future__ import annotations

import importlib.util
import json

import onnx
import pytest

from mrc.serve.export import down_projection_matmuls, export_onnx
from tests.conftest import ROOT
from tests.serve.helpers import make_checkpoint, squad_file


def script():
    here = ROOT / "experiments" / "inference"
    spec = importlib.util.spec_from_file_location("static_int8", here / "static_int8.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("static")
    ckpt = make_checkpoint(tmp / "ckpt", "globalpointer")
    export_onnx(ckpt, tmp / "m.onnx")
    return tmp, ckpt, tmp / "m.onnx", squad_file(tmp / "train.json")


@pytest.mark.parametrize("keep_down", [False, True])
def test_static_int8_quantises_activations_and_answers(exported, keep_down, capsys):
    tmp, ckpt, src, train = exported
    out = tmp / f"static_{keep_down}.onnx"
    args = [str(ckpt), str(src), str(out), "--train", str(train), "--questions", "2", "--check-questions", "2"]
    assert script().main(args + (["--keep-down"] if keep_down else [])) == 0
    assert "MatMuls static int8" in capsys.readouterr().out
    graph = onnx.load(str(out)).graph
    down = set(down_projection_matmuls(onnx.load(str(src)).graph))
    fp32_left = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert (down <= fp32_left) == keep_down  # the down-projections stay fp32 exactly when asked
    record = json.loads((tmp / f"static_{keep_down}.onnx.check.json").read_text())
    # activations quantised with fixed scales: one QLinearMatMul per static product, not a weight-only graph
    assert record["ops"]["QLinearMatMul"] == record["static_matmuls"] > 0
    assert record["static_matmuls"] == (4 if keep_down else 6)  # tiny BERT, 2 layers: attention out, FFN in (, down)
    assert 0.0 <= record["check"]["best_cell_agreement"] <= 1.0
    assert {m.key for m in onnx.load(str(out)).metadata_props} >= {"mrc.head", "mrc.max_answer_len"}

    from mrc.data.squad import load_squad
    from mrc.eval.predict import load_for_inference, predict
    examples, _ = load_squad(train, training=False)
    answers, _ = predict(*load_for_inference(ckpt, onnx=out), examples)
    assert set(answers) == {e.id for e in examples}


def test_static_int8_refuses_smoothing_what_it_keeps(exported):
    tmp, ckpt, src, train = exported
    with pytest.raises(SystemExit, match="use one"):
        script().main([str(ckpt), str(src), str(tmp / "x.onnx"), "--train", str(train), "--keep-down",
                       "--smooth-alpha", "0.5"])
