"""``python -m mrc.serve CHECKPOINT_DIR``: the HTTP API and web page (code: :mod:`mrc.serve.app`)."""
from mrc.serve.app import main

if __name__ == "__main__":
    raise SystemExit(main())
