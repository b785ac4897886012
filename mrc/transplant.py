"""``python -m mrc.transplant --out DIR``: an English encoder body with a Chinese vocabulary
(code: :mod:`mrc.pretrain.transplant`)."""
from mrc.pretrain.transplant import main

if __name__ == "__main__":
    main()
