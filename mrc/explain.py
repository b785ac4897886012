"""``python -m mrc.explain CHECKPOINT_DIR ...``: span-score pictures as PNGs (code: :mod:`mrc.serve.explain`)."""
from mrc.serve.explain import main

if __name__ == "__main__":
    raise SystemExit(main())
