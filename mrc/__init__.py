"""mrc-zh: span-scoring machine reading comprehension for Chinese.

The library, by concern (each subpackage's docstring says what it may import; ``tests/contracts/test_layout.py``
checks it)::

    data/        SQuAD-format reading and validation, download, subsets, windows (features), batching, demo data
    robustness/  builders of robustness splits (over-sensitivity, over-stability) and their CLI
    model/       encoders, the span model (encoder + head), checkpoints
    eval/        official metric, scoring windows and decoding spans, null thresholds, evaluate / predict
    train/       the fine-tuning run: pipeline, training loop, resume, DDP, loggers, split registry, outputs
    pretrain/    masked-LM pretraining, its corpus and held-out scores, vocabulary transplant
    report/      ablation tables, plots and significance over run directories
    bench/       training / evaluation speed against the HuggingFace peer
    serve/       using a trained model: HTTP API and web page, span-score pictures, ONNX export

The heads live beside it in the top-level ``heads`` package. ``errors`` (one module, importable from every
layer) turns a user mistake into one ``error:`` line and exit status 2 for every command. ``__main__`` is the
command table: ``python -m mrc COMMAND`` (the ``mrc`` console script) runs ``train`` (run.py), ``predict``,
``evaluate``, ``serve``, ``explain``, ``export``, ``report``, ``abstention``, ``bench``, ``robustness``,
``lexical``, ``pretrain``, ``transplant`` and ``e5`` from the subpackages.
"""
