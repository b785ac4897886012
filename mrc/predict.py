"""``python -m mrc.predict CHECKPOINT_DIR ...``: answers from a saved checkpoint (code: :mod:`mrc.eval.predict`)."""
from mrc.eval.predict import main

if __name__ == "__main__":
    raise SystemExit(main())
