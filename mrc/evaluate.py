"""``python -m mrc.evaluate REFERENCE.json PREDICTIONS.json``: official F1/EM (code: :mod:`mrc.eval.evaluate`)."""
from mrc.eval.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
