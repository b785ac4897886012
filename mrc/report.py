"""Ablation report over finished runs and Hydra multirun sweeps.

    python -m mrc.report DIR [DIR ...] [--out OUT] [--splits a,b] [--baseline LABEL]
                         [--bootstrap N] [--seed S]

Every directory under each DIR (DIR included) holding ``.hydra/overrides.yaml`` is a job; so is one
with ``config.yaml`` + ``metrics.json`` and no ``.hydra/``. Jobs are grouped into configurations by
their overrides (seed, ``hydra.*``, ``paths.*``, ``logger`` and ``trainer.progress`` left out), and
OUT (default ``<first DIR>/report``) receives ``report.md``, ``report.csv``, ``significance.csv``
and PNG plots. Exit status: 0 with at least one finished job, 2 otherwise or on bad input.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import shlex
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

from mrc import report_plots, report_stats
from mrc.report_jobs import (Configs, Configuration, Job, Keys, ReportError, all_splits, as_number, common_overrides,
                             config_row, find_jobs, group_configurations, identity_label, in_domain_split, mapping,
                             natural_key, robustness_drop, select_splits, speed_stats, split_stats, varying_keys)
from mrc.report_stats import Comparison

MISSING = "–"
STRIDE_KEY = "data.doc_stride"
PLOT_FILES = ("f1_vs_stride.png", "robustness_drop.png", "throughput.png")


# --------------------------------------------------------------------------- significance


@dataclass
class SignificanceRow:
    """One pairwise comparison on one split, with Holm-adjusted p-values filled in later."""

    split: str
    a: str
    b: str
    result: Comparison
    p_bootstrap_holm: float = math.nan
    p_wilcoxon_holm: float = math.nan


def load_scores(job: Job, split: str) -> tuple[dict[str, float] | None, str | None]:
    """Per-question F1 from ``scores/<split>.json``, or None and a note why not."""
    file = job.path / "scores" / f"{split}.json"
    if not file.is_file():
        return None, None
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        return {str(qid): float(s["f1"]) for qid, s in data.items()}, None
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return None, f"{job.display}: unreadable scores/{split}.json ({type(exc).__name__}: {exc}); left out"


def config_scores(config: Configuration, split: str, notes: list[str]) -> dict[str, float] | None:
    """Per-question F1 averaged over the configuration's seeds, or None without any scores file."""
    per_seed = []
    for job in config.jobs:
        scores, note = load_scores(job, split)
        if note:
            notes.append(note)
        if scores is not None:
            per_seed.append(scores)
    return report_stats.seed_averaged(per_seed) if per_seed else None


def repeated_seed_notes(configs: Configs) -> list[str]:
    """Notes for configurations in which a seed occurs more than once (reruns counted twice)."""
    notes = []
    for config in configs:
        repeated = sorted(str(s) for s, n in Counter(j.seed for j in config.jobs).items() if n > 1 and s is not None)
        if repeated:
            notes.append(f"{config.label}: seed(s) {', '.join(repeated)} occur in more than one finished job")
    return notes


def comparison_pairs(labels: Sequence[str], baseline: str | None, across: Sequence[str] = (),
                     identities: dict[str, dict[str, str]] | None = None) -> list[tuple[str, str]]:
    """(A, B) pairs to test. Neither ``baseline`` nor ``across``: every pair. Otherwise the union of every
    configuration vs ``baseline`` (A = the other one) and, for each key in ``across``, every pair whose
    identities differ in that key only (e.g. ``encoder``: each encoder against each other, head held fixed)."""
    if baseline is None and not across:
        return list(combinations(labels, 2))
    pairs = [(label, baseline) for label in labels if baseline is not None and label != baseline]
    identities = identities or {}
    for a, b in combinations(labels, 2):
        ia, ib = identities.get(a, {}), identities.get(b, {})
        differ = {k for k in ia.keys() | ib.keys() if ia.get(k) != ib.get(k)}
        if len(differ) == 1 and differ <= set(across) and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


def significance(configs: Sequence[Configuration], splits: Sequence[str], baseline: str | None,
                 n_resamples: int, seed: int, notes: list[str], across: Sequence[str] = ()) -> list[SignificanceRow]:
    """Pairwise comparisons on each split, Holm-adjusted across all of them."""
    identities = {c.label: c.identity for c in configs}
    rows = []
    for split in splits:
        scores = {c.label: config_scores(c, split, notes) for c in configs}
        missing = [label for label, s in scores.items() if s is None]
        if missing:
            notes.append(f"no scores/{split}.json for: {'; '.join(missing)} (left out of the {split} comparisons)")
        labels = [label for label, s in scores.items() if s is not None]
        base = baseline if baseline in labels else None
        if baseline is not None and base is None and not across:
            continue
        for a, b in comparison_pairs(labels, base, across, identities):
            rows.append(SignificanceRow(split, a, b, report_stats.compare(scores[a], scores[b], n_resamples, seed)))
    for attr, adjusted_attr in (("p_bootstrap", "p_bootstrap_holm"), ("p_wilcoxon", "p_wilcoxon_holm")):
        adjusted = report_stats.holm([getattr(r.result, attr) for r in rows])
        for row, p in zip(rows, adjusted):
            setattr(row, adjusted_attr, p)
    return rows


def resolve_baseline(baseline: str | None, configs: Sequence[Configuration], keys: Sequence[str]) -> str | None:
    """The full label of ``--baseline`` (given as a full label or as its varying ``key=value`` part)."""
    if baseline is None:
        return None
    for config in configs:
        short = identity_label({k: v for k, v in config.identity.items() if k in keys})
        if baseline in (config.label, short):
            return config.label
    labels = "; ".join(c.label for c in configs)
    raise ReportError(f"--baseline {baseline!r} matches no configuration; labels: {labels}")


# --------------------------------------------------------------------------- plots


def head_name(config: Configuration) -> str:
    """The ``head`` override, else the class name of ``config.yaml``'s ``head._target_``."""
    if "head" in config.identity:
        return config.identity["head"]
    for job in config.jobs:
        target = mapping(job.config.get("head")).get("_target_")
        if target:
            return str(target).rsplit(".", 1)[-1]
    return "?"


def doc_stride(config: Configuration) -> float | None:
    """``data.doc_stride`` from the overrides, else from the first job's ``config.yaml``."""
    if STRIDE_KEY in config.identity:
        try:
            return float(config.identity[STRIDE_KEY])
        except ValueError:
            return None
    for job in config.jobs:
        value = as_number(mapping(job.config.get("data")).get("doc_stride"))
        if value is not None:
            return value
    return None


def short_name(config: Configuration, keys: Sequence[str], drop: Sequence[str] = ()) -> str:
    """A plot label: head name plus the other varying ``key=value`` (last key component)."""
    parts = [head_name(config)]
    parts += [f"{k.rsplit('.', 1)[-1]}={config.identity[k]}" for k in keys
              if k != "head" and k not in drop and k in config.identity]
    return ", ".join(parts)


def _plot_f1_vs_stride(configs: Configs, keys: Keys, in_domain: str, path: Path) -> str | None:
    series: dict[str, list[tuple[float, float, float]]] = {}
    for config in configs:
        stride, stats = doc_stride(config), split_stats(config, in_domain)
        if stride is not None and not math.isnan(stats["f1_mean"]):
            series.setdefault(short_name(config, keys, drop=[STRIDE_KEY]), []).append(
                (stride, stats["f1_mean"], stats["f1_std"]))
    if not series:
        return "no finished job has both data.doc_stride and in-domain F1"
    report_plots.plot_f1_vs_stride(series, in_domain, path)
    return None


def _plot_robustness(configs: Configs, keys: Keys, splits: Keys, in_domain: str, path: Path) -> str | None:
    others = [s for s in splits if s != in_domain]
    if not others:
        return "no split besides the in-domain one"
    drops = {s: [robustness_drop(c, s, in_domain)[0] for c in configs] for s in others}
    if all(math.isnan(v) for values in drops.values() for v in values):
        return "no job has F1 on both the in-domain and another split"
    report_plots.plot_robustness_drop([short_name(c, keys) for c in configs], drops, in_domain, path)
    return None


def _plot_throughput(configs: Configs, keys: Keys, in_domain: str, path: Path) -> str | None:
    speeds = [speed_stats(c, in_domain) for c in configs]
    train = [s["train_examples_per_s"] for s in speeds]
    evaluation = [s["eval_examples_per_s"] for s in speeds]
    if all(math.isnan(v) for v in train + evaluation):
        return "no job reports train or eval examples/s"
    report_plots.plot_throughput([short_name(c, keys) for c in configs], train, evaluation, path)
    return None


def make_plots(configs: Sequence[Configuration], keys: Sequence[str], splits: Sequence[str],
               in_domain: str | None, out: Path) -> dict[str, str | None]:
    """Write the PNGs; map each file name to None (written) or the reason it was skipped."""
    if not configs or in_domain is None:
        return {name: "no finished jobs with an in-domain split" for name in PLOT_FILES}
    configs = sorted(configs, key=lambda c: natural_key(short_name(c, keys)))  # groups bars by head
    makers = {
        "f1_vs_stride.png": lambda p: _plot_f1_vs_stride(configs, keys, in_domain, p),
        "robustness_drop.png": lambda p: _plot_robustness(configs, keys, splits, in_domain, p),
        "throughput.png": lambda p: _plot_throughput(configs, keys, in_domain, p),
    }
    result: dict[str, str | None] = {}
    for name, make in makers.items():
        try:
            result[name] = make(out / name)
        except Exception as exc:  # a plot must never take the report down
            result[name] = f"plotting failed ({type(exc).__name__}: {exc})"
    return result


# --------------------------------------------------------------------------- formatting and writing


def fmt_num(value: float, digits: int = 2) -> str:
    """Fixed-point number, or ``–`` for NaN."""
    return MISSING if value is None or math.isnan(value) else f"{value:.{digits}f}"


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
    header += ["train ex/s", "eval ex/s", "peak RSS MiB"]
    rows = []
    for config in configs:
        ids = [config.identity.get(k, "") for k in keys] or [config.label]
        cells = []
        for split in splits:
            st = split_stats(config, split)
            cells += [fmt_mean_std(st["f1_mean"], st["f1_std"]), fmt_mean_std(st["em_mean"], st["em_std"])]
        speed = speed_stats(config, in_domain)
        rows.append(ids + [len(config.jobs)] + cells + [fmt_num(speed["train_examples_per_s"], 1),
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
    return lines + md_table(header, body)


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


def significance_rows(rows: Sequence[SignificanceRow]) -> list[dict[str, Any]]:
    """Plain dicts for ``significance.csv``."""
    return [{"split": r.split, "a": r.a, "b": r.b, "n_questions": r.result.n_questions,
             "delta_f1": r.result.delta, "ci_low": r.result.ci_low, "ci_high": r.result.ci_high,
             "p_bootstrap": r.result.p_bootstrap, "p_bootstrap_holm": r.p_bootstrap_holm,
             "p_wilcoxon": r.result.p_wilcoxon, "p_wilcoxon_holm": r.p_wilcoxon_holm,
             "share_a_better": r.result.a_better, "share_b_better": r.result.b_better} for r in rows]


SIGNIFICANCE_COLUMNS = ("split", "a", "b", "n_questions", "delta_f1", "ci_low", "ci_high", "p_bootstrap",
                        "p_bootstrap_holm", "p_wilcoxon", "p_wilcoxon_holm", "share_a_better", "share_b_better")


def csv_header(keys: Sequence[str], splits: Sequence[str]) -> list[str]:
    """Columns of ``report.csv``."""
    header = list(keys) + ["label", "n", "seeds"]
    header += [f"{s}/{m}" for s in splits for m in ("f1_mean", "f1_std", "em_mean", "em_std")]
    return header + ["train_examples_per_s", "eval_examples_per_s", "peak_rss_mb"]


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
    md = markdown(command, jobs, configs, keys, splits, in_domain, sig, plots, notes, args)
    (out / "report.md").write_text(md, encoding="utf-8")
    return out, jobs, configs


def markdown(command: str, jobs: Sequence[Job], configs: Configs, keys: Keys, splits: Keys,
             in_domain: str | None, sig: Sequence[SignificanceRow], plots: dict[str, str | None],
             notes: Sequence[str], args: argparse.Namespace) -> str:
    """The whole ``report.md``."""
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


if __name__ == "__main__":
    sys.exit(main())
