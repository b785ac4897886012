"""A run's inputs: the data root, the data preparer, training examples and evaluation splits, all read
and checked before any model is built, so a user mistake stops the run at once with one message.

Training questions pass two optional steps, in this order: ``data.calibration_share`` holds a stable hash
share of them out as the ``calibration`` split (thresholds and calibration are fitted there, not on a split
that is reported), then ``data.negatives`` adds unanswerable questions built from what is left."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

from mrc.data.download import resolve_data_root
from mrc.data.negatives import DEFAULT_KINDS, KINDS, build_negatives, check_options, total_counts
from mrc.data.squad import DataError, Example, clean_squad, load_squad, read_json
from mrc.data.subsets import in_eval_part, select_questions
from mrc.eval.metric import describe_notes, load_references, notes
from mrc.eval.nulls import TUNE_FOR
from mrc.eval.split import Split
from mrc.train.splits import input_paths, materialise, split_specs, write_built

CALIBRATION = "calibration"  # the held-out split's name and its hash salt
MAX_CALIBRATION_SHARE = 0.5

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
    examples only, read after rank 0 has prepared them; no eval splits. The calibration hold-out and the
    negatives depend only on the data and the options, so every rank trains on the same questions.
    """
    root = resolve_data_root(cfg.data.root)
    share, negatives = calibration_share(cfg), negative_options(cfg)
    specs = eval_specs(cfg) if main else {}
    train_specs = split_specs({f"train{i}": entry for i, entry in enumerate(cfg.data.train)})
    needed = input_paths(train_specs) + input_paths(specs)
    if cfg.data.get("prepare") and main:
        log.info("preparing data under %s (data.prepare: %s)", root, cfg.data.prepare._target_.rsplit(".", 1)[-1])
        instantiate(cfg.data.prepare, root=root, needed=needed)
    groups, paths, train_stats = [], [], []  # per training file, so negatives stay within their file
    for i, (name, spec) in enumerate(train_specs.items()):
        path, build_counts = materialise(name, spec, root, run_dir, label=f"data.train[{i}]")
        if path is None:
            continue
        log.info("reading training file %s", path)
        examples, stats = load_squad(path, training=True)
        groups.append(examples)
        paths.append(path)
        train_stats.append(stats.as_dict() | ({"build": build_counts} if build_counts else {}))
    if cfg.data.limit_train:
        groups = first_n(groups, cfg.data.limit_train)
    groups, held = hold_out(groups, share)
    if share:
        for stats, h in zip(train_stats, held):
            stats["calibration_held_out"] = len(h)
        log.info("calibration: held out %d of %d training questions (data.calibration_share=%g, salt %r)",
                 sum(map(len, held)), sum(map(len, groups)) + sum(map(len, held)), share, CALIBRATION)
    if negatives.share:
        groups = [g + b for g, b in zip(groups, make_negatives(groups, negatives, train_stats, "training"))]
    train = [e for g in groups for e in g]
    splits = {}
    for name, spec in specs.items():
        path, build_counts = materialise(name, spec, root, run_dir, label=f"data.eval.{name}")
        if path is None:
            continue
        splits[name] = _eval_split(cfg, name, spec, path, build_counts)
    if main and share:
        cal = calibration_split(cfg, share, held, paths, splits, run_dir, negatives)
        if cal is not None:
            splits[CALIBRATION] = cal
    if cfg.data.get("check_overlap", True):
        check_overlap(train, splits)
    if main and cfg.data.in_domain not in splits:
        raise ConfigError(f"data.in_domain={cfg.data.in_domain!r} is not among the loaded eval splits "
                          f"{sorted(splits)}; set data.in_domain to one of them")
    if main:
        check_tune_on(cfg, splits)
    if not train:
        raise DataError(f"data.train: no usable training examples in {list(cfg.data.train)} under {root} "
                        f"(see the skip counts above); fix the files or data.train")
    return root, train, train_stats, splits


@dataclass(frozen=True)
class Negatives:
    """``data.negatives``: share of answerable questions, kinds, seed, and whether the calibration split
    gets its own."""

    share: float = 0.0
    kinds: tuple[str, ...] = DEFAULT_KINDS
    seed: int = 0
    calibration: bool = True


def negative_options(cfg: DictConfig) -> Negatives:
    """``data.negatives`` checked (absent: off)."""
    opts = cfg.data.get("negatives") or {}
    known = {"share", "kinds", "seed", "calibration"}
    if set(opts) - known:
        raise ConfigError(f"data.negatives: unknown keys {sorted(set(opts) - known)}; known: {sorted(known)}")
    try:
        kinds = check_options(opts.get("share", 0.0), list(opts.get("kinds", DEFAULT_KINDS)))
    except ValueError as e:
        raise ConfigError(f"data.negatives: {e}") from None
    seed, cal = opts.get("seed", 0), opts.get("calibration", True)
    if isinstance(seed, bool) or not isinstance(seed, int) or not isinstance(cal, bool):
        raise ConfigError(f"data.negatives: seed must be an integer and calibration true or false, got "
                          f"seed={seed!r}, calibration={cal!r}")
    return Negatives(float(opts.get("share", 0.0)), kinds, seed, cal)


def calibration_share(cfg: DictConfig) -> float:
    """``data.calibration_share`` checked: in [0, 0.5], and the split name free for it."""
    share = cfg.data.get("calibration_share") or 0.0
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= MAX_CALIBRATION_SHARE:
        raise ConfigError(f"data.calibration_share={share!r}: must be a number in [0, {MAX_CALIBRATION_SHARE}] "
                          "(e.g. 0.1; 0 holds nothing out)")
    if share and cfg.data.in_domain == CALIBRATION:
        raise ConfigError("data.in_domain=calibration: the calibration split (data.calibration_share) tunes "
                          "thresholds and must not pick the best epoch; set data.in_domain to an eval split")
    if share and CALIBRATION in (cfg.data.get("eval") or {}):
        raise ConfigError("data.eval.calibration: the name is taken by the split data.calibration_share holds "
                          "out; rename that eval split or set data.calibration_share=0")
    return float(share)


def first_n(groups: list[list[Example]], n: int) -> list[list[Example]]:
    """The first ``n`` examples of the concatenated groups, still grouped (``data.limit_train``)."""
    out = []
    for group in groups:
        out.append(group[:max(n, 0)])
        n -= len(out[-1])
    return out


def hold_out(groups: list[list[Example]], share: float) -> tuple[list[list[Example]], list[list[Example]]]:
    """(kept, held) per group: a question is held out when its id's salted hash falls in ``share``."""
    if not share:
        return groups, [[] for _ in groups]
    flags = [[in_eval_part(e.id, share, CALIBRATION) for e in g] for g in groups]
    kept = [[e for e, f in zip(g, fl) if not f] for g, fl in zip(groups, flags)]
    held = [[e for e, f in zip(g, fl) if f] for g, fl in zip(groups, flags)]
    return kept, held


def make_negatives(groups: list[list[Example]], opts: Negatives, stats: list[dict] | None,
                   what: str) -> list[list[Example]]:
    """The unanswerable questions ``data.negatives`` builds for each group; their counts go into ``stats``
    (one dict per group) and one log line (``what``: whose questions they are)."""
    built, counts = build_negatives(groups, opts.share, opts.kinds, opts.seed)
    for st, c in zip(stats or [], counts):
        st["negatives"] = c
    t = total_counts(counts)
    by_kind = ", ".join(f"{k} {t[k]}" for k in KINDS if k in opts.kinds)
    log.info("negatives: added %d (%s) to %d %s questions; %d questions had no usable paragraph", t["added"],
             by_kind, t["questions"], what, t["no_paragraph"])
    return built


def calibration_split(cfg: DictConfig, share: float, held: list[list[Example]], paths: list[Path],
                      splits: dict[str, Split], run_dir: Path, negatives: Negatives) -> Split | None:
    """The held-out training questions as the ``calibration`` split, read from the training files only
    (written to ``<run dir>/splits/calibration.json``); questions also in an eval split are dropped."""
    eval_ids = {g.id for s in splits.values() for g in s.gold}
    eval_pairs = {(e.question, e.context) for s in splits.values() for e in s.examples}
    seen: set[str] = set()  # an id in two training files is kept once (the official scorer refuses duplicates)
    keep = []
    for group in held:
        keep.append([e for e in group if e.id not in eval_ids and (e.question, e.context) not in eval_pairs
                     and e.id not in seen])
        seen.update(e.id for e in keep[-1])
    dropped = sum(map(len, held)) - len(seen)
    data = []
    for path, group in zip(paths, keep):
        ids = {e.id for e in group}
        if ids:
            data += select_questions(clean_squad(read_json(path), path)[0], ids.__contains__)[0]["data"]
    counts = {"held_out": sum(map(len, held)), "dropped_eval_questions": dropped, "share": share,
              "salt": CALIBRATION}
    if negatives.share and negatives.calibration and data:
        # Its own negatives, from its own questions and paragraphs: a threshold tuned on a split without
        # unanswerable questions would always answer.
        built = [e for g in make_negatives(keep, negatives, None, "calibration") for e in g]
        data.append({"title": "negatives", "paragraphs": [
            {"context": e.context, "qas": [{"id": e.id, "question": e.question, "answers": [],
                                            "is_impossible": True, "type": e.qtype}]} for e in built]})
        counts["negatives"] = len(built)
    if not data:
        log.warning("calibration: no question left to hold out (data.calibration_share=%g); no calibration split",
                    share)
        return None
    path = write_built(run_dir, CALIBRATION, {"version": CALIBRATION, "data": data})
    log.info("calibration split: %d questions (%d held out, %d dropped as evaluation questions, %d negatives) -> %s",
             len(seen) + counts.get("negatives", 0), counts["held_out"], dropped, counts.get("negatives", 0), path)
    return _eval_split(cfg, CALIBRATION, {"optional": False, "calibration": True}, path, counts)


def check_tune_on(cfg: DictConfig, splits: dict[str, Split]) -> None:
    """With ``decode.null_threshold=tune``, ``decode.tune_on`` must be a loaded split (checked before training)."""
    decode = cfg.get("decode") or {}
    tune_for, loss = decode.get("tune_for", "f1"), decode.get("answerable_loss", 1.0)
    if tune_for not in TUNE_FOR:
        raise ConfigError(f"decode.tune_for={tune_for!r}: must be one of {', '.join(TUNE_FOR)}")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not 0.0 <= loss <= 100.0:
        raise ConfigError(f"decode.answerable_loss={loss!r}: must be a number of F1 points in [0, 100]")
    if decode.get("null_threshold") != "tune" or decode.get("tune_on") in splits:
        return
    hint = " (set data.calibration_share, e.g. 0.1)" if decode.get("tune_on") == CALIBRATION else ""
    raise ConfigError(f"decode.tune_on={decode.get('tune_on')!r} is not among the loaded eval splits "
                      f"{sorted(splits)}{hint}; set decode.tune_on to one of them")


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
