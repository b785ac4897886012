"""``python -m mrc.export CHECKPOINT_DIR --onnx OUT.onnx``: ONNX export (code: :mod:`mrc.serve.export`)."""
from mrc.serve.export import main

if __name__ == "__main__":
    raise SystemExit(main())
