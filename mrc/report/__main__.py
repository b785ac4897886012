"""``python -m mrc.report DIR [DIR ...] [--out OUT] ...``: ablation tables and plots (code: :mod:`mrc.report.build`)."""
from mrc.report.build import main

raise SystemExit(main())
