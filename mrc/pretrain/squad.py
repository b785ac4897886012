"""MRC text for pretraining, taken from a fine-tuning data config (``conf/data/<name>.yaml``).

``data.mrc_data=cpu_small`` in ``python -m mrc.pretrain`` reads that config's ``train`` and ``eval``
entries (plain paths or ``{source, builder}`` specs, resolved against its ``root``) exactly as a
fine-tuning run would, builds derived files into ``<run dir>/splits/``, and then

- adds every evaluation file to the exclusion filter, so no line overlapping an evaluation question or
  context is pretrained on (the robustness rewrites included), and
- with ``data.train_contexts=true``, adds the distinct contexts of the training files to the corpus,
  one line each, *before* that filter (a training context shared with an evaluation question is dropped).
"""
from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mrc.data.squad import load_squad
from mrc.data.download import resolve_data_root
from mrc.train.splits import materialise, split_specs

log = logging.getLogger(__name__)
DATA_CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def data_config(name: str) -> DictConfig:
    """``conf/data/<name>.yaml`` as a DictConfig (its ``${oc.env:...}`` interpolations resolve as usual)."""
    path = DATA_CONF / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in DATA_CONF.glob("*.yaml"))
        raise FileNotFoundError(f"data.mrc_data={name!r}: no {path} (known: {known})")
    return OmegaConf.load(path)


def mrc_files(name: str, out_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(training files, evaluation files) of data config ``name``, derived files built under ``out_dir``."""
    cfg = data_config(name)
    root = resolve_data_root(cfg.get("root"))
    out = []
    for entries in ({f"train{i}": e for i, e in enumerate(cfg.train)}, cfg.eval):
        paths = []
        for split, spec in split_specs(entries).items():
            path, _ = materialise(f"{name}_{split}", spec, root, Path(out_dir))
            if path is not None:
                paths.append(path)
        out.append(paths)
    log.info("mrc_data %s (root %s): %d training files, %d evaluation files", name, root, len(out[0]), len(out[1]))
    return out[0], out[1]


def squad_contexts(paths: list[Path]) -> list[str]:
    """The distinct contexts of SQuAD files in file order, each on one line (newlines become spaces)."""
    seen: dict[str, None] = {}
    for path in paths:
        examples, _ = load_squad(path, training=False)
        for e in examples:
            seen.setdefault(" ".join(e.context.split("\n")).strip(), None)
    return [c for c in seen if c]
