"""Ablation report over finished runs and Hydra multirun sweeps.

    python -m mrc.report DIR [DIR ...] [--out OUT] [--splits a,b] [--baseline LABEL]
                         [--bootstrap N] [--seed S] [--keep-records]

Every directory under each DIR (DIR included) holding ``.hydra/overrides.yaml`` is a job; so is one
with ``config.yaml`` + ``metrics.json`` and no ``.hydra/``. Jobs are grouped into configurations by
their overrides (seed, ``hydra.*``, ``paths.*``, ``logger`` and ``trainer.progress`` left out), and
OUT (default ``<first DIR>/report``) receives ``report.md``, ``report.csv``, ``significance.csv``
and PNG plots; a Hydra Optuna sweep under a DIR (``optimization_results.yaml``) also gets its own section and
``search.csv``: each trial's objective (the held-out slice's F1) apart from the eval splits. Exit status: 0
with at least one finished job, 2 otherwise or on bad input.
"""
from __future__ import annotations

import argparse
import csv
import math
import shlex
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mrc.report.jobs import (Configs, Configuration, Job, Keys, ReportError, all_splits, common_overrides, config_row,
                             find_jobs, group_configurations, identity_label, in_domain_split, robustness_drop,
                             select_splits, speed_stats, split_stats, varying_keys)
from mrc.report.plots import make_plots
from mrc.report.records import keep_records
from mrc.report.search import COLUMNS as SEARCH_COLUMNS
from mrc.report.search import find_searches, search_rows, search_section
from mrc.report.significance import (SIGNIFICANCE_COLUMNS, SignificanceRow, resolve_baseline, significance,
                                     significance_rows, unpaired_notes)

MISSING = "–"


# --------------------------------------------------------------------------- report.md


def repeated_seed_notes(configs: Configs) -> list[str]:
    """Notes for configurations in which a seed occurs more than once (reruns counted twice)."""
    notes = []
    for config in configs:
        repeated = sorted(str(s) for s, n in Counter(j.seed for j in config.jobs).items() if n > 1 and s is not None)
        if repeated:
            notes.append(f"{config.label}: seed(s) {', '.join(repeated)} occur in more than one finished job")
    return notes




def fmt_num(value: float, digits: int = 2) -> str:
    """Fixed-point number, or ``–`` for NaN."""
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


def fmt_count(value: float) -> str:
    """A count with thousands separators (``21,541,760``), or ``–`` for NaN."""
    return MISSING if value is None or math.isnan(value) else f"{round(value):,}"


def fmt_mean_std(mean: float, std: float, digits: int = 2) -> str:
    """``mean ± std``, ``mean`` alone when std is undefined (one seed), ``–`` when missing."""
    if math.isnan(mean):
        return MISSING
    return fmt_num(mean, digits) if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_p(value: float) -> str:
    """p-value with three significant digits."""
    return MISSING if math.isnan(value) else f"{value:.3g}"


def md_cell(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return lines


def results_table(configs: Configs, keys: Keys, splits: Keys, in_domain: str | None) -> list[str]:
    """The per-configuration table (F1/EM per split and speed)."""
    id_cols = list(keys) or ["configuration"]
    header = id_cols + ["n"] + [f"{s} {m}" for s in splits for m in ("F1", "EM")]
    header += ["trainable params", "train ex/s", "eval ex/s", "peak RSS MiB"]
    rows = []
    for config in configs:
        ids = [config.identity.get(k, "") for k in keys] or [config.label]
        cells = []
        for split in splits:
            st = split_stats(config, split)
            cells += [fmt_mean_std(st["f1_mean"], st["f1_std"]), fmt_mean_std(st["em_mean"], st["em_std"])]
        speed = speed_stats(config, in_domain)
        rows.append(ids + [len(config.jobs)] + cells + [fmt_count(speed["trainable_params"]),
                                                        fmt_num(speed["train_examples_per_s"], 1),
                                                        fmt_num(speed["eval_examples_per_s"], 1),
                                                        fmt_num(speed["peak_rss_mb"], 1)])
    return md_table(header, rows)


def significance_section(rows: Sequence[SignificanceRow], n_resamples: int, seed: int,
                         configs: Configs = (), keys: Keys = ()) -> list[str]:
    """Markdown for the significance tests; A and B are named by their varying overrides only."""
    short = {c.label: identity_label({k: v for k, v in c.identity.items() if k in keys}) for c in configs if keys}
    lines = ["## Significance", "",
             "ΔF1 = A − B in F1 points on per-question F1 averaged over each configuration's seeds, paired "
             f"over the questions both have. Paired bootstrap: {n_resamples} resamples of questions, seed {seed} "
             "(95% percentile CI, two-sided p). Wilcoxon: signed-rank test on the paired differences. "
             f"Holm: adjusted across all {len(rows)} comparisons. Effect size: share of questions where "
             "A beats B / B beats A.", ""]
    if not rows:
        return lines + ["No comparisons (fewer than two configurations with per-question scores)."]
    header = ["split", "A", "B", "questions", "ΔF1", "95% CI", "p boot", "p boot Holm",
              "p Wilcoxon", "p Wilcoxon Holm", "A wins / B wins"]
    body = []
    for r in rows:
        c = r.result
        body.append([r.split, short.get(r.a, r.a), short.get(r.b, r.b), c.n_questions, fmt_num(c.delta),
                     f"[{fmt_num(c.ci_low)}, {fmt_num(c.ci_high)}]", fmt_p(c.p_bootstrap),
                     fmt_p(r.p_bootstrap_holm), fmt_p(c.p_wilcoxon), fmt_p(r.p_wilcoxon_holm),
                     f"{fmt_num(100 * c.a_better, 1)}% / {fmt_num(100 * c.b_better, 1)}%"])
    names = {label: f"`{short.get(label, label)}`" for r in rows for label in (r.a, r.b)}
    partial = [f"- {note}" for note in unpaired_notes(rows, names)]
    return lines + md_table(header, body) + (["", *partial] if partial else [])


def robustness_section(configs: Configs, keys: Keys, splits: Keys, in_domain: str) -> list[str]:
    """Markdown for split F1 − in-domain F1 per configuration."""
    others = [s for s in splits if s != in_domain]
    lines = ["## Robustness drop", "", f"Split F1 − `{in_domain}` F1 in points (per seed, then mean ± std).", ""]
    if not others:
        return lines + ["No split besides the in-domain one."]
    id_cols = list(keys) or ["configuration"]
    rows = []
    for config in configs:
        ids = [config.identity.get(k, "") for k in keys] or [config.label]
        cells = [fmt_mean_std(*robustness_drop(config, s, in_domain)[:2]) for s in others]
        rows.append(ids + cells)
    return lines + md_table(id_cols + others, rows)


def failed_section(failed: Sequence[Job]) -> list[str]:
    """Markdown list of failed or unfinished jobs."""
    lines = ["## Failed or unfinished jobs", ""]
    if not failed:
        return lines + ["none"]
    for job in failed:
        overrides = " ".join(job.overrides) or "(no overrides)"
        lines.append(f"- `{job.display}` — overrides: `{overrides}` — {job.reason}")
    return lines


def plots_section(plots: dict[str, str | None]) -> list[str]:
    """Markdown image links, or why a plot was skipped."""
    lines = ["## Plots", ""]
    for name, reason in plots.items():
        lines.append(f"![{name[:-4]}]({name})" if reason is None else f"- skipped `{name}`: {reason}")
    return lines


def write_csv(path: Path, rows: Sequence[dict[str, Any]], header: Sequence[str]) -> None:
    """CSV with NaN written as an empty cell."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(header))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()})


def csv_header(keys: Sequence[str], splits: Sequence[str]) -> list[str]:
    """Columns of ``report.csv``."""
    header = list(keys) + ["label", "n", "seeds"]
    header += [f"{s}/{m}" for s in splits for m in ("f1_mean", "f1_std", "em_mean", "em_std")]
    return header + ["trainable_params", "train_examples_per_s", "eval_examples_per_s", "peak_rss_mb"]


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m mrc.report", description="Ablation report over runs/sweeps.")
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="run or multirun directories (searched recursively)")
    parser.add_argument("--out", help="output directory (default: <first DIR>/report)")
    parser.add_argument("--splits", help="comma-separated splits to report (and to test for significance)")
    parser.add_argument("--baseline", help="compare each configuration only against this label")
    parser.add_argument("--across", action="append", default=[], metavar="KEY",
                        help="compare configurations that differ only in override KEY, e.g. --across encoder "
                             "(each encoder against each other, same head); repeatable; with --baseline, "
                             "both sets of comparisons")
    parser.add_argument("--bootstrap", type=int, default=2000, help="paired-bootstrap resamples (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap RNG seed (default 0)")
    parser.add_argument("--keep-records", action="store_true",
                        help="copy each finished job's overrides, config, metrics.json and per-question scores "
                             "to OUT/runs/ (no checkpoints), so later reports can pair new runs with them")
    args = parser.parse_args(list(argv))
    if args.bootstrap < 1:
        parser.error("--bootstrap must be at least 1")
    return args


def build_report(args: argparse.Namespace, command: str) -> tuple[Path, list[Job], list[Configuration]]:
    """Read the jobs under ``args.dirs`` and write every output; return (OUT, jobs, configurations)."""
    jobs = find_jobs(args.dirs)
    configs = group_configurations(jobs)
    if not configs:
        raise ReportError(f"no finished jobs found under {', '.join(args.dirs)} "
                          f"({len(jobs)} failed or unfinished); no report written")
    notes = repeated_seed_notes(configs)
    in_domain = in_domain_split(jobs)
    splits = select_splits(all_splits(jobs, in_domain), args.splits, notes)
    keys = varying_keys(configs)
    baseline = resolve_baseline(args.baseline, configs, keys)
    sig_splits = splits if args.splits else [s for s in [in_domain] if s]
    unknown = [k for k in args.across if k not in keys]
    if unknown:
        raise ReportError(f"--across {', '.join(unknown)}: not an override that varies between the "
                          f"configurations (varying: {', '.join(keys) or 'none'})")
    sig = significance(configs, sig_splits, baseline, args.bootstrap, args.seed, notes, args.across)
    out = Path(args.out) if args.out else Path(args.dirs[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    plots = make_plots(configs, keys, splits, in_domain, out)
    write_csv(out / "report.csv", [config_row(c, keys, splits, in_domain) for c in configs], csv_header(keys, splits))
    write_csv(out / "significance.csv", significance_rows(sig), SIGNIFICANCE_COLUMNS)
    searches = find_searches(args.dirs, jobs)  # Optuna sweeps: each trial's objective, apart from the eval splits
    if searches:
        write_csv(out / "search.csv", search_rows(searches), SEARCH_COLUMNS)
    if args.keep_records:
        target, written, record_notes = keep_records(jobs, out)
        notes = [*notes, *record_notes, f"records of {written} runs written to `{target.name}/` (config, metrics, "
                 f"per-question scores): pass that directory to `mrc.report` to pair later runs with them"]
    md = markdown(command, jobs, configs, keys, splits, in_domain, sig, plots, notes, args, searches)
    (out / "report.md").write_text(md, encoding="utf-8")
    return out, jobs, configs


def markdown(command: str, jobs: Sequence[Job], configs: Configs, keys: Keys, splits: Keys,
             in_domain: str | None, sig: Sequence[SignificanceRow], plots: dict[str, str | None],
             notes: Sequence[str], args: argparse.Namespace, searches: Sequence = ()) -> str:
    """The whole ``report.md``; ``searches``: :class:`mrc.report.search.Search` sections after the results."""
    n_failed = sum(not j.finished for j in jobs)
    common = common_overrides(configs, keys)
    lines = [f"# Ablation report: `{command}`", "",
             f"{len(jobs) - n_failed} finished and {n_failed} failed or unfinished jobs in {len(configs)} "
             f"configurations. In-domain split: `{in_domain}`."]
    if common:
        lines.append(f"Common overrides: `{' '.join(common)}`.")
    lines += ["", "## Results", "", "F1/EM: mean ± sample std over seeds (mean alone for one seed); "
              "speed columns: mean over seeds.", ""]
    lines += results_table(configs, keys, splits, in_domain) + [""]
    if searches:
        lines += search_section(searches, lambda job: identity_label({k: v for k, v in job.identity.items()
                                                                       if k in keys})) + [""]
    lines += significance_section(sig, args.bootstrap, args.seed, configs, keys) + [""]
    if in_domain:
        lines += robustness_section(configs, keys, splits, in_domain) + [""]
    lines += failed_section([j for j in jobs if not j.finished]) + [""]
    lines += plots_section(plots) + [""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    command = shlex.join(["python", "-m", "mrc.report", *argv])
    try:
        out, jobs, configs = build_report(args, command)
    except (ReportError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_failed = sum(not j.finished for j in jobs)
    print(f"report written to {out / 'report.md'} (+ report.csv, significance.csv, plots)")
    print(f"{len(jobs) - n_failed} finished, {n_failed} failed or unfinished jobs, {len(configs)} configurations")
    return 0
