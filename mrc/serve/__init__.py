"""Using a trained model: the HTTP API and web page (``app``, ``page.html``, ``limits``; ``python -m mrc.serve``:
``cli``), the
same pictures as PNGs (``explain``; ``python -m mrc explain``), the ONNX export (``export``;
``python -m mrc export``), and the answers / score views both share (``answers``).

Every answer comes from the prediction path of :mod:`mrc.eval` (``predict``, ``score_windows``,
``postprocess``, ``window_scores``) on a checkpoint loaded by :mod:`mrc.model.checkpoint` (no code run);
int8 quantisation and the ONNX Runtime model live in :mod:`mrc.model.quantize`.

May import ``mrc.data``, ``mrc.model``, ``mrc.eval`` and ``heads``; nothing imports it but the command shims.
"""
