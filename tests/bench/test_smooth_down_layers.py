"""experiments/inference/smooth_down_layers.py: smoothing leaves the fp32 graph's scores unchanged, and the int8
graph it writes quantises the down-projections too and loads like an export."""
from __future__ import annotations

import importlib.util

import numpy as np
import onnx
import onnx.numpy_helper

from mrc.serve.export import export_onnx
from tests.conftest import ROOT
from tests.serve.helpers import make_checkpoint, squad_file


def script():
    spec = importlib.util.spec_from_file_location("smooth_down_layers",
                                                  ROOT / "experiments" / "inference" / "smooth_down_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoothing_is_exact_in_fp32_and_the_int8_graph_quantises_the_down_projections(tmp_path, capsys):
    sdl = script()
    ckpt = make_checkpoint(tmp_path / "ckpt", "globalpointer")
    src = tmp_path / "m.onnx"
    export_onnx(ckpt, src)
    train = squad_file(tmp_path / "train.json")
    model = onnx.load(str(src))
    nodes = sdl.down_projections(model.graph)
    assert len(nodes) == 2  # one per encoder layer of the tiny BERT
    feeds, n_windows = sdl.TrainingFeeds(ckpt, src, train, batch_size=2)(0, 4)
    assert n_windows >= 4
    amax = sdl.activation_maxima(model, nodes, feeds)
    width = {n.input[0]: onnx.numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == n.input[1]))
             .shape[0] for n in nodes}
    assert all(v.shape == (width[k],) and (v >= 0).all() and v.max() > 0 for k, v in amax.items())

    # an outlier channel, as in the real encoder: the scales must still leave the product unchanged
    amax = {k: np.where(np.arange(len(v)) == 3, 50.0, v).astype(np.float32) for k, v in amax.items()}
    smoothed = sdl.smooth(model, 0.7, amax)
    muls = [n for n in smoothed.graph.node if n.name.endswith("_smooth_mul")]
    assert len(muls) == 2
    path = tmp_path / "smoothed.onnx"
    onnx.save(smoothed, str(path))
    before, after = sdl.bands(src, feeds), sdl.bands(path, feeds)
    for x, y in zip(before, after):
        keep = x > -1e3
        assert np.allclose(x[keep], y[keep], atol=1e-4)
    assert sdl.compare(before, after)["best_cell_agreement"] == 1.0

    out = tmp_path / "int8.onnx"
    assert sdl.main([str(ckpt), str(src), str(out), "--train", str(train), "--alpha", "0.5,0.7",
                     "--questions", "2", "--check-questions", "2"]) == 0
    printed = capsys.readouterr().out
    assert "alpha 0.5:" in printed and "alpha 0.7:" in printed and "2 down-projections smoothed" in printed
    graph = onnx.load(str(out)).graph
    down = {n.name for n in nodes}
    assert not any(n.name in down for n in graph.node if n.op_type == "MatMul")  # every down-projection is int8
    assert {m.key for m in onnx.load(str(out)).metadata_props} >= {"mrc.head", "mrc.max_answer_len"}

    from mrc.data.squad import load_squad
    from mrc.eval.predict import load_for_inference, predict
    examples, _ = load_squad(train, training=False)
    answers, _ = predict(*load_for_inference(ckpt, onnx=out), examples)  # loads and answers like an export
    assert set(answers) == {e.id for e in examples}
