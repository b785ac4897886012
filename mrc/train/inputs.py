"""A run's inputs: the data root, the data preparer, training examples and evaluation splits, all read
and checked before any model is built, so a user mistake stops the run at once with one message."""
from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from mrc.data.download import resolve_data_root
from mrc.data.squad import DataError, Example, load_squad
from mrc.eval.metric import describe_notes, load_references, notes
from mrc.train.splits import Split, input_paths, materialise, split_specs

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """An option that cannot work (the message names the option and what to set)."""

    user_facing = True


def eval_specs(cfg: DictConfig) -> dict[str, dict]:
    """``data.eval`` as specs, narrowed to ``data.eval_splits`` when that is set (e.g. ``[in_domain]``)."""
    specs = split_specs(cfg.data.eval)
    only = cfg.data.get("eval_splits")
    if only is None:
        return specs
    unknown = sorted(set(only) - set(specs))
    if unknown:
        raise ConfigError(f"data.eval_splits={list(only)}: {unknown} not in data.eval ({sorted(specs)})")
    return {name: spec for name, spec in specs.items() if name in only}


def load_data(cfg: DictConfig, run_dir: Path, main: bool = True):
    """Resolve the data root, run the data preparer, load training examples and build/load eval splits.

    ``main=False`` (DDP ranks other than 0, which neither prepare data nor evaluate): training
    examples only, read after rank 0 has prepared them; no eval splits.
    """
    root = resolve_data_root(cfg.data.root)
    specs = eval_specs(cfg) if main else {}
    train_specs = split_specs({f"train{i}": entry for i, entry in enumerate(cfg.data.train)})
    needed = input_paths(train_specs) + input_paths(specs)
    if cfg.data.get("prepare") and main:
        log.info("preparing data under %s (data.prepare: %s)", root, cfg.data.prepare._target_.rsplit(".", 1)[-1])
        instantiate(cfg.data.prepare, root=root, needed=needed)
    train, train_stats = [], []
    for i, (name, spec) in enumerate(train_specs.items()):
        path, build_counts = materialise(name, spec, root, run_dir, label=f"data.train[{i}]")
        if path is None:
            continue
        log.info("reading training file %s", path)
        examples, stats = load_squad(path, training=True)
        train.extend(examples)
        train_stats.append(stats.as_dict() | ({"build": build_counts} if build_counts else {}))
    if cfg.data.limit_train:
        train = train[:cfg.data.limit_train]
    splits = {}
    for name, spec in specs.items():
        path, build_counts = materialise(name, spec, root, run_dir, label=f"data.eval.{name}")
        if path is None:
            continue
        splits[name] = _eval_split(cfg, name, spec, path, build_counts)
    if cfg.data.get("check_overlap", True):
        check_overlap(train, splits)
    if main and cfg.data.in_domain not in splits:
        raise ConfigError(f"data.in_domain={cfg.data.in_domain!r} is not among the loaded eval splits "
                          f"{sorted(splits)}; set data.in_domain to one of them")
    if not train:
        raise DataError(f"data.train: no usable training examples in {list(cfg.data.train)} under {root} "
                        f"(see the skip counts above); fix the files or data.train")
    return root, train, train_stats, splits


def _eval_split(cfg: DictConfig, name: str, spec: dict, path: Path, build_counts) -> Split:
    examples, stats = load_squad(path, training=False)
    if not examples:
        raise DataError(f"data.eval.{name} ({path}): no usable question among its {stats.records} records "
                        f"(skipped {dict(stats.skipped)}); fix the file or remove the split")
    gold = load_references(path)
    if cfg.data.limit_eval:
        examples = examples[:cfg.data.limit_eval]
        keep = {e.id for e in examples}
        gold = [g for g in gold if g.id in keep]
    stats = stats.as_dict() | ({"build": build_counts} if build_counts else {})
    if notes(gold):
        stats["scored_unanswerable"] = notes(gold)
        log.warning("data.eval.%s: %s", name, describe_notes(gold, path))
    return Split(name, path, examples, gold, stats, spec)


def check_overlap(train: list[Example], splits: dict[str, Split]) -> None:
    """Refuse a run whose training data shares question ids with an evaluation split."""
    train_ids = {e.id for e in train}
    for name, split in splits.items():
        shared = sorted(train_ids.intersection(g.id for g in split.gold))
        if shared:
            raise ConfigError(f"eval split {name!r} ({split.path}) shares {len(shared)} question ids with the "
                              f"training data, e.g. {shared[:3]}; fix data.train/data.eval or set "
                              "data.check_overlap=false")
