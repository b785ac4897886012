"""Hyper-parameter searches in the report: a Hydra Optuna sweep (``optimization_results.yaml`` beside its job
directories, written by hydra-optuna-sweeper) listed trial by trial with its objective — the F1 on the slice held
out of training that chose the trial's epoch (``metrics.json`` ``selection``, ``trainer.select_on=calibration``)
— apart from the eval-split scores, with its best trial named."""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mrc.report.jobs import Job, as_number, mapping, natural_key, parse_override

RESULTS = "optimization_results.yaml"
COLUMNS = ["search", "trial", "job", "params", "objective_split", "objective_f1", "selected_epoch", "best"]


@dataclass
class Trial:
    """One job of a search: its sampled parameters and objective (None: not finished or not selected on a slice)."""

    job: Job
    params: dict[str, str]
    objective: float | None
    split: str | None
    epoch: Any


@dataclass
class Search:
    """A sweep directory holding ``optimization_results.yaml`` and its trials."""

    path: Path
    display: str
    best_params: dict[str, Any]
    best_value: float | None
    trials: list[Trial] = field(default_factory=list)
    best: Trial | None = None
    notes: list[str] = field(default_factory=list)


def _same(value: str, wanted: Any) -> bool:
    """An override's text equals a sampled value (numbers compared as numbers)."""
    try:
        return math.isclose(float(value), float(wanted), rel_tol=1e-9, abs_tol=0.0)
    except (TypeError, ValueError):
        return str(value) == str(wanted)


def _trial(job: Job, keys: Sequence[str]) -> Trial:
    overrides = dict(parse_override(o) for o in job.overrides)
    selection = mapping((job.metrics or {}).get("selection"))
    return Trial(job, {k: overrides.get(k, "") for k in keys}, as_number(selection.get("f1")),
                 selection.get("split") if isinstance(selection.get("split"), str) else None,
                 (job.metrics or {}).get("selected_epoch"))


def load_search(results: Path, display: str, jobs: Sequence[Job]) -> Search:
    """The search whose ``optimization_results.yaml`` is ``results``; its trials are the jobs directly under it."""
    try:
        data = yaml.safe_load(results.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        data = None
        note = f"{display}: unreadable {RESULTS} ({type(exc).__name__}); trials listed without the sweeper's best"
    else:
        note = None if isinstance(data, dict) else f"{display}: {RESULTS} is not a mapping"
    data = mapping(data)
    best_params = mapping(data.get("best_params"))
    search = Search(results.parent, display, best_params, as_number(data.get("best_value")),
                    notes=[note] if note else [])
    here = results.parent.resolve()
    mine = sorted((j for j in jobs if j.path.resolve().parent == here), key=lambda j: natural_key(j.path.name))
    search.trials = [_trial(j, list(best_params)) for j in mine]
    matches = [t for t in search.trials if best_params and t.job.finished
               and all(_same(t.params[k], v) for k, v in best_params.items())]
    search.best = matches[0] if matches else None
    unselected = [t.job.path.name for t in search.trials if t.job.finished and t.objective is None]
    if unselected:
        search.notes.append(f"{display}: trial(s) {', '.join(unselected)} chose no epoch on a held-out slice "
                            "(no `selection` in metrics.json): their objective was an eval split's F1")
    if search.best is not None and search.best_value is not None and search.best.objective is not None \
            and not math.isclose(search.best.objective, search.best_value, abs_tol=1e-6):
        search.notes.append(f"{display}: the sweeper's best value {search.best_value:g} is not trial "
                            f"{search.best.job.path.name}'s slice F1 {search.best.objective:g}")
    if best_params and search.best is None:
        search.notes.append(f"{display}: no finished trial has the best parameters of {RESULTS}")
    return search


def find_searches(dirs: Sequence[str], jobs: Sequence[Job]) -> list[Search]:
    """Every search under ``dirs`` (each once), in the order found."""
    found, seen = [], set()
    for given in dirs:
        root = Path(given)
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted((d for d in dirnames if not d.startswith(".")), key=natural_key)
            if RESULTS in filenames and Path(dirpath).resolve() not in seen:
                seen.add(Path(dirpath).resolve())
                rel = Path(dirpath).relative_to(root)
                display = given if rel == Path(".") else str(Path(given) / rel)
                found.append(load_search(Path(dirpath) / RESULTS, display, jobs))
    return found


def _f1(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def search_section(searches: Sequence[Search], label_of) -> list[str]:
    """Markdown: per search, the best trial and every trial's parameters and objective (no eval-split score).
    ``label_of(job)``: the job's configuration label in the Results table."""
    lines = ["## Hyper-parameter search", ""]
    for s in searches:
        split = next((t.split for t in s.trials if t.split), "calibration")
        finished = sum(t.job.finished for t in s.trials)
        lines += [f"`{s.display}`: Optuna (hydra-optuna-sweeper), {len(s.trials)} trials ({finished} finished). "
                  f"Objective: F1 on the `{split}` slice held out of training, at the epoch it chose "
                  "(`metrics.json` `selection`); no eval split chose a trial or an epoch, and the eval-split "
                  "scores in Results are reported, not optimised.", ""]
        if s.best is not None:
            params = " ".join(f"{k}={v}" for k, v in s.best.params.items())
            lines += [f"**Best trial** `{s.best.job.display}`: `{params}` — {split} F1 {_f1(s.best.objective)} "
                      f"(epoch {s.best.epoch}); its eval-split scores: Results row `{label_of(s.best.job)}`.", ""]
        keys = list(s.best_params)
        header = ["trial", *keys, f"{split} F1 (objective)", "selected epoch", "best"]
        rows = [[t.job.path.name, *[t.params[k] for k in keys],
                 _f1(t.objective) if t.job.finished else f"– ({t.job.reason})",
                 "–" if t.epoch is None else t.epoch, "★" if t is s.best else ""] for t in s.trials]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
        lines += [""] + [f"- {n}" for n in s.notes] + ([""] if s.notes else [])
    return lines


def search_rows(searches: Sequence[Search]) -> list[dict[str, Any]]:
    """``search.csv`` rows: one per trial."""
    return [{"search": s.display, "trial": t.job.path.name, "job": t.job.display,
             "params": " ".join(f"{k}={v}" for k, v in t.params.items()), "objective_split": t.split or "",
             "objective_f1": math.nan if t.objective is None else t.objective,
             "selected_epoch": "" if t.epoch is None else t.epoch, "best": t is s.best}
            for s in searches for t in s.trials]
