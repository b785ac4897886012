"""Run records: the few files of a finished job that the report reads, copied beside the report.

``python -m mrc.report ... --keep-records`` writes ``OUT/runs/<job>/`` for every finished job:
``.hydra/overrides.yaml``, ``config.yaml``, ``metrics.json`` and ``scores/<split>.tsv`` (per-question
F1/EM, one ``<digest>\t<f1>\t<em>`` line per question under a ``question\tf1\tem`` header, keyed by a
digest of each question id: a record holds no dataset content and no dataset-shaped JSON). No checkpoint, no
predictions: a record is a few hundred KB. The report keys every job's scores by the same digest
(:func:`question_key`), so records and run directories pair. A record directory is itself a job
directory, so a later report can pair new runs with these question by question
(``python -m mrc.report OUT/runs NEW_DIR ...``) after the original run directories are gone.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from mrc.report.jobs import Job

RECORD_FILES = (".hydra/overrides.yaml", "config.yaml", "metrics.json")
RECORD_DIR = "runs"
DIGEST_PREFIX = "sha256:"
SCORES_HEADER = "question\tf1\tem"
SCORES_SUFFIXES = (".json", ".tsv")  # a run's own scores/<split>.json, a record's scores/<split>.tsv


def question_key(qid: str) -> str:
    """The key the report pairs a question by: ``sha256:`` + 16 hex digits of its id (a key that already is
    a digest passes unchanged)."""
    return qid if qid.startswith(DIGEST_PREFIX) else DIGEST_PREFIX + hashlib.sha256(qid.encode()).hexdigest()[:16]


def write_scores(path: Path, per_question: dict) -> None:
    """A record's ``<split>.tsv`` from a run's ``{id: {"f1", "em"}}``, keyed by :func:`question_key`."""
    rows = [f"{question_key(str(q))}\t{float(s['f1'])!r}\t{float(s['em'])!r}" for q, s in per_question.items()]
    path.write_text("\n".join([SCORES_HEADER, *rows]) + "\n", encoding="utf-8")


def read_scores(path: Path) -> dict[str, float]:
    """Per-question F1 keyed by :func:`question_key`, from a run's ``<split>.json`` or a record's
    ``<split>.tsv``; ValueError naming the line (or question) and value on a malformed file or a score
    that is not a number in [0, 1]."""
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".tsv":
        out = {}
        for q, s in json.loads(text).items():
            where = f"question {q!r}"
            out[question_key(str(q))] = checked_score(s["f1"], "F1", where)
            if "em" in s:
                checked_score(s["em"], "EM", where)
        return out
    lines = text.splitlines()
    if not lines or lines[0] != SCORES_HEADER:
        raise ValueError(f"the first line is not the header {SCORES_HEADER!r}")
    out = {}
    for n, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 3:
            raise ValueError(f"line {n} has {len(fields)} tab-separated fields, not 3")
        out[question_key(fields[0])] = checked_score(fields[1], "F1", f"line {n}")
        checked_score(fields[2], "EM", f"line {n}")
    return out


def checked_score(value, name: str, where: str) -> float:
    """``value`` as a float in [0, 1] (per-question scores are fractions; the summaries are x100), else
    ValueError naming ``where`` and the value: one NaN once made two identical runs "significantly" different."""
    shown = value if isinstance(value, str) and value.strip() else repr(value)
    if isinstance(value, bool):  # float(True) is 1.0: a JSON true is no score
        raise ValueError(f"{where}: {name} {shown} is not a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {name} {shown} is not a number") from None
    if not 0.0 <= number <= 1.0:  # False for NaN too
        raise ValueError(f"{where}: {name} {shown} is not a number in [0, 1]")
    return number


def record_names(paths: Sequence[Path]) -> list[str]:
    """A unique directory name per job: its own name, with parent names prefixed (``a__0``) where names clash."""
    deepest = max((len(p.parts) for p in paths), default=1)
    for depth in range(1, deepest + 1):
        names = ["__".join(p.parts[-depth:]) for p in paths]
        if len(set(names)) == len(names):
            break
    return names


def split_scores(folder: Path) -> list[Path]:
    """One scores file per split in ``folder``: a run's ``<split>.json``, else a record's ``<split>.tsv``."""
    if not folder.is_dir():
        return []
    by_split: dict[str, Path] = {}
    for suffix in reversed(SCORES_SUFFIXES):  # .json last, so it wins where both exist
        for file in folder.glob(f"*{suffix}"):
            by_split[file.stem] = file
    return [by_split[split] for split in sorted(by_split)]


def keep_records(jobs: Sequence[Job], out: Path) -> tuple[Path, int, list[str]]:
    """Copy the record of every finished job under ``out/runs``; return (that dir, records written, notes).

    A job that already lives in ``out/runs`` (a report rebuilt from its own records) is left as it is.
    """
    target = out / RECORD_DIR
    finished = [j for j in jobs if j.finished]
    paths = [j.path.resolve() for j in finished]
    written, notes = 0, []
    for job, source, name in zip(finished, paths, record_names(paths)):
        if source.parent == target.resolve():
            continue
        dest = target / name
        if dest.exists():
            shutil.rmtree(dest)
        for rel in RECORD_FILES:
            if (source / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source / rel, dest / rel)
        scores = split_scores(source / "scores")
        if not scores:
            notes.append(f"{job.display}: no scores/ (its record cannot be paired question by question)")
        for file in scores:
            try:
                (dest / "scores").mkdir(parents=True, exist_ok=True)
                read_scores(file)  # checked first: a record never carries a score the report would refuse
                if file.suffix == ".tsv":  # a record kept by an earlier report: copied as it is
                    shutil.copyfile(file, dest / "scores" / file.name)
                else:
                    per_question = json.loads(file.read_text(encoding="utf-8"))
                    write_scores(dest / "scores" / f"{file.stem}.tsv", per_question)
            except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
                notes.append(f"{job.display}: unreadable scores/{file.name} ({type(exc).__name__}: {exc}); not kept")
        written += 1
    return target, written, notes
