"""``python -m mrc.serve CHECKPOINT_DIR``: the HTTP API and web page (code: :mod:`mrc.serve.cli`, :mod:`mrc.serve.app`)."""
from mrc.serve.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
