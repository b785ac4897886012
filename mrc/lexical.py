"""``python -m mrc.lexical [overrides]``: the lexical-overlap floor as a run dir (code: :mod:`mrc.train.lexical`)."""
from mrc.train.lexical import main

if __name__ == "__main__":
    main()
