"""Reading runs for the report: find job directories, load them, group them into configurations,
and aggregate their metrics over seeds (mrc.report writes the tables and plots)."""
from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrc.report import stats as report_stats

IGNORED_KEYS = frozenset({"seed", "logger", "trainer.progress"})
IGNORED_PREFIXES = ("hydra.", "hydra/", "paths.")


class ReportError(Exception):
    """Bad input that ends the tool with exit status 2 and a one-line message."""


# --------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One run directory: its overrides, resolved config and (when finished) metrics."""

    path: Path
    display: str
    overrides: list[str]
    identity: dict[str, str]
    seed: Any
    config: dict
    metrics: dict | None = None
    reason: str | None = None

    @property
    def finished(self) -> bool:
        """True when ``metrics.json`` was read successfully."""
        return self.metrics is not None

    def split_value(self, split: str, key: str) -> float | None:
        """``metrics["splits"][split][key]`` as a float, or None."""
        return as_number(mapping(mapping((self.metrics or {}).get("splits")).get(split)).get(key))

    def split_names(self) -> list[str]:
        """Names of the splits in ``metrics.json``."""
        return list(((self.metrics or {}).get("splits") or {}).keys())


@dataclass
class Configuration:
    """Finished jobs sharing the same identity overrides (typically one per seed)."""

    label: str
    identity: dict[str, str]
    jobs: list[Job] = field(default_factory=list)


Configs = Sequence[Configuration]
Keys = Sequence[str]


def mapping(value: Any) -> dict:
    """``value`` if it is a dict, else an empty dict (tolerates odd JSON/YAML shapes)."""
    return value if isinstance(value, dict) else {}


def as_number(value: Any) -> float | None:
    """``value`` as a float when it is a real number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def natural_key(text: str) -> list:
    """Sort key that orders embedded integers numerically (``2`` before ``10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", str(text))]


def is_job_dir(path: Path) -> bool:
    """Whether ``path`` is a run directory (Hydra-written, or plain config + metrics)."""
    if (path / ".hydra" / "overrides.yaml").is_file():
        return True
    return (not (path / ".hydra").exists() and (path / "config.yaml").is_file()
            and (path / "metrics.json").is_file())


def find_job_dirs(root: Path) -> list[Path]:
    """Job directories under ``root`` (itself included); a job's own subdirectories are not searched."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        here = Path(dirpath)
        if is_job_dir(here):
            found.append(here)
            dirnames.clear()
            continue
        dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
    return found


def parse_override(text: str) -> tuple[str, str]:
    """``"+a.b=c"`` → ``("a.b", "c")``; an override without ``=`` has the value ``""``."""
    key, _, value = str(text).partition("=")
    return key.strip().lstrip("+"), value.strip()


def is_identity_key(key: str) -> bool:
    """Whether an override key distinguishes configurations (seed, hydra, paths, logging do not)."""
    return key not in IGNORED_KEYS and not key.startswith(IGNORED_PREFIXES)


def identity_label(identity: dict[str, str]) -> str:
    """Sorted ``key=value`` pairs joined by ``", "``, or ``(defaults)``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(identity.items())) or "(defaults)"


def _read_yaml(path: Path) -> tuple[Any, str | None]:
    """Parsed YAML (None if absent) and an error message if it could not be read."""
    if not path.is_file():
        return None, None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8-sig")), None  # one rule: a BOM is allowed
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        return None, f"unreadable {path.name}: {type(exc).__name__}: {exc}".splitlines()[0]


def _read_overrides(path: Path) -> tuple[list[str], str | None]:
    data, error = _read_yaml(path / ".hydra" / "overrides.yaml")
    if error:
        return [], error
    if data is None:
        return [], None
    if not isinstance(data, list):
        return [], "unreadable .hydra/overrides.yaml: not a YAML list"
    return [str(item) for item in data], None


def _read_metrics(path: Path) -> tuple[dict | None, str]:
    """Metrics dict, or None and why the job counts as failed or unfinished."""
    file = path / "metrics.json"
    if not file.is_file():
        crashed = "" if (path / "config.yaml").is_file() else "; no config.yaml either (crashed early?)"
        return None, f"no metrics.json (failed or unfinished){crashed}"
    try:
        metrics = json.loads(file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"corrupt metrics.json: {exc}"
    if not isinstance(metrics, dict) or not isinstance(metrics.get("splits"), dict):
        return None, "corrupt metrics.json: no 'splits' mapping"
    return metrics, ""


def _job_seed(overrides: dict[str, str], config: dict) -> Any:
    """Seed from the ``seed=`` override, else ``config.yaml``'s ``seed``, else None."""
    if "seed" in overrides:
        value = overrides["seed"]
        return int(value) if re.fullmatch(r"-?\d+", value) else value
    return config.get("seed")


def load_job(path: Path, display: str) -> Job:
    """Read one job directory; problems become ``Job.reason`` instead of exceptions."""
    overrides, override_error = _read_overrides(path)
    parsed = dict(parse_override(o) for o in overrides)
    config, config_error = _read_yaml(path / "config.yaml")
    config = config if isinstance(config, dict) else {}
    identity = {k: v for k, v in parsed.items() if is_identity_key(k)}
    job = Job(path, display, overrides, identity, _job_seed(parsed, config), config)
    if override_error:
        job.reason = override_error
        return job
    job.metrics, reason = _read_metrics(path)
    if job.metrics is None:
        job.reason = reason + (f"; {config_error}" if config_error else "")
    return job


def find_jobs(dirs: Sequence[str]) -> list[Job]:
    """All jobs under ``dirs`` (each reported once); a missing DIR raises :class:`ReportError`."""
    jobs, seen = [], set()
    for given in dirs:
        root = Path(given)
        if not root.is_dir():
            raise ReportError(f"no such directory: {given}")
        for path in find_job_dirs(root):
            resolved = path.resolve()
            if resolved in seen:
                continue
            seen.add(resolved)
            rel = path.relative_to(root)
            jobs.append(load_job(path, given if rel == Path(".") else str(Path(given) / rel)))
    return jobs


def group_configurations(jobs: Iterable[Job]) -> list[Configuration]:
    """Finished jobs grouped by identity, ordered by label (numbers compared numerically)."""
    groups: dict[str, Configuration] = {}
    for job in jobs:
        if job.finished:
            label = identity_label(job.identity)
            groups.setdefault(label, Configuration(label, job.identity)).jobs.append(job)
    return sorted(groups.values(), key=lambda c: natural_key(c.label))


def varying_keys(configs: Sequence[Configuration]) -> list[str]:
    """Override keys whose value (or presence) differs between configurations."""
    keys = sorted({k for c in configs for k in c.identity})
    return [k for k in keys if len({c.identity.get(k) for c in configs}) > 1]


def common_overrides(configs: Sequence[Configuration], varying: Sequence[str]) -> list[str]:
    """``key=value`` overrides shared by every configuration."""
    keys = sorted({k for c in configs for k in c.identity} - set(varying))
    return [f"{k}={configs[0].identity[k]}" for k in keys]


# --------------------------------------------------------------------------- splits and aggregates


def in_domain_split(jobs: Iterable[Job]) -> str | None:
    """The most common ``in_domain`` name among finished jobs."""
    names = Counter(j.metrics.get("in_domain") for j in jobs if j.finished
                    and isinstance(j.metrics.get("in_domain"), str))
    return names.most_common(1)[0][0] if names else None


CALIBRATION_SPLIT = "calibration"  # = mrc.eval.selective.CALIBRATION (mrc.report imports no other layer)


def all_splits(jobs: Iterable[Job], in_domain: str | None) -> list[str]:
    """Union of split names over finished jobs, the in-domain split first, then first-seen order."""
    names: dict[str, None] = {in_domain: None} if in_domain else {}
    for job in jobs:
        names.update(dict.fromkeys(job.split_names()))
    # the slice held out of training to fit thresholds and calibrators on: scored in-sample, never a result
    return [n for n in names if n != CALIBRATION_SPLIT]


def select_splits(available: list[str], requested: str | None, notes: list[str]) -> list[str]:
    """Splits for the report: all of ``available``, or the requested ones that exist."""
    if not requested:
        return available
    wanted = [s.strip() for s in requested.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in available]
    if unknown:
        notes.append(f"--splits: not in any finished job, left out: {', '.join(unknown)}")
    chosen = [s for s in wanted if s in available]
    if not chosen:
        raise ReportError(f"none of --splits {requested} was found; available: {', '.join(available)}")
    return chosen


def _values(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _mean(values: Iterable[float | None]) -> float:
    return report_stats.mean_std(_values(values))[0]


def split_stats(config: Configuration, split: str) -> dict[str, float]:
    """Mean/std of F1 and EM over the seeds that evaluated ``split``, and their count."""
    f1 = _values(j.split_value(split, "F1") for j in config.jobs)
    em = _values(j.split_value(split, "EM") for j in config.jobs)
    f1_mean, f1_std = report_stats.mean_std(f1)
    em_mean, em_std = report_stats.mean_std(em)
    return {"f1_mean": f1_mean, "f1_std": f1_std, "em_mean": em_mean, "em_std": em_std, "n": len(f1)}


def speed_stats(config: Configuration, in_domain: str | None) -> dict[str, float]:
    """Means over seeds of train examples/s, in-domain eval examples/s, peak RSS (MiB) and trainable
    parameters (the count ``finetune`` and ``neck`` change)."""
    jobs = config.jobs
    return {
        "train_examples_per_s": _mean(as_number(mapping(j.metrics.get("train")).get("examples_per_s"))
                                      for j in jobs),
        "eval_examples_per_s": _mean(j.split_value(in_domain, "examples_per_s") for j in jobs)
        if in_domain else math.nan,
        "peak_rss_mb": _mean(as_number(j.metrics.get("peak_rss_mb")) for j in jobs),
        "trainable_params": _mean(as_number(mapping(j.metrics.get("train")).get("trainable_params"))
                                  for j in jobs),
    }


def robustness_drop(config: Configuration, split: str, in_domain: str) -> tuple[float, float, int]:
    """Mean and std over seeds of ``split`` F1 − in-domain F1 (paired per seed), and the seed count."""
    diffs = []
    for job in config.jobs:
        a, b = job.split_value(split, "F1"), job.split_value(in_domain, "F1")
        if a is not None and b is not None:
            diffs.append(a - b)
    mean, std = report_stats.mean_std(diffs)
    return mean, std, len(diffs)


def seeds_text(config: Configuration) -> str:
    """Space-separated seeds of the configuration's jobs (``?`` where unknown)."""
    return " ".join(sorted(("?" if j.seed is None else str(j.seed) for j in config.jobs), key=natural_key))


def config_row(config: Configuration, keys: Sequence[str], splits: Sequence[str],
               in_domain: str | None) -> dict[str, Any]:
    """One ``report.csv`` row (numbers as floats, NaN where missing)."""
    row: dict[str, Any] = {k: config.identity.get(k, "") for k in keys}
    row.update(label=config.label, n=len(config.jobs), seeds=seeds_text(config))
    for split in splits:
        stats = split_stats(config, split)
        row.update({f"{split}/{k}": stats[k] for k in ("f1_mean", "f1_std", "em_mean", "em_std")})
    row.update(speed_stats(config, in_domain))
    return row
