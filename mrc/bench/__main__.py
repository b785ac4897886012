"""``python -m mrc.bench [...]``: our training / evaluation speed against the HF peer (code: :mod:`mrc.bench.ours`)."""
from mrc.bench.ours import main

raise SystemExit(main())
