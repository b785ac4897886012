"""``python -m mrc abstention RUN_DIR [RUN_DIR ...] --out DIR``: when the models should not answer.

Per run and confidence method (raw = softmax over the n-best and the null at T = 1; temperature; features, the
last two fitted on the calibration slice held out of training): the abstention metrics of the mixed pool
``metrics.json`` holds (ECE, MacroCE, Brier, AURC, coverage at answer-F1 >= 80 / 90 %, the AURC change against
raw with its paired bootstrap p), each split's F1 / HasAns / NoAns F1, and per run a risk-coverage plot and a
reliability diagram of the pool drawn from ``confidence/<split>.json`` and ``scores/<split>.json``.
Reads files only (like the rest of :mod:`mrc.report`).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

METHODS = ("raw", "temperature", "features")
BINS = 15  # equal-mass bins of the reliability diagram, as the ECE in metrics.json


def _read(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise SystemExit(f"error: {path}: unreadable ({str(e)[:120]})") from None


def pool_arrays(run: Path, splits: list[str], method: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(confidence, F1) of the pool's questions under ``method``, from the run's per-question files (None when a
    run wrote none: runs before the files existed)."""
    conf, f1 = [], []
    for split in splits:
        cfile, sfile = run / "confidence" / f"{split}.json", run / "scores" / f"{split}.json"
        if not cfile.is_file() or not sfile.is_file():
            return None
        c, s = _read(cfile).get(method), _read(sfile)
        if c is None:
            return None
        ids = [q for q in s if q in c]
        conf += [float(c[q]) for q in ids]
        f1 += [float(s[q]["f1"]) for q in ids]
    return np.array(conf), np.array(f1)


def risk_curve(conf: np.ndarray, f1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk = 1 - mean F1 of the answered) answering the most confident first."""
    order = np.argsort(-conf, kind="stable")
    k = np.arange(1, conf.size + 1)
    return k / conf.size, 1.0 - np.cumsum(f1[order]) / k


def reliability(conf: np.ndarray, f1: np.ndarray, bins: int = BINS) -> tuple[np.ndarray, np.ndarray]:
    """(mean confidence, mean F1) per equal-mass bin of the questions sorted by confidence."""
    order = np.argsort(conf, kind="stable")
    parts = [p for p in np.array_split(order, min(bins, conf.size)) if p.size]
    return np.array([conf[p].mean() for p in parts]), np.array([f1[p].mean() for p in parts])


def plot_run(name: str, curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Risk-coverage curves (left) and reliability diagram (right) of one run's pool, one line per method."""
    fig = Figure(figsize=(9.0, 3.8), layout="constrained")
    ax_rc, ax_rel = fig.subplots(1, 2)
    for method, (conf, f1) in curves.items():
        ax_rc.plot(*risk_curve(conf, f1), label=method)
        ax_rel.plot(*reliability(conf, f1), marker="o", label=method)
    ax_rc.set(xlabel="coverage (share answered, most confident first)", ylabel="risk (1 - answer F1)",
              title=f"{name}: risk-coverage", xlim=(0, 1), ylim=(0, 1))
    ax_rel.plot([0, 1], [0, 1], color="grey", linestyle=":", label="calibrated")
    ax_rel.set(xlabel=f"confidence ({BINS} equal-mass bins)", ylabel="answer F1", title="reliability",
               xlim=(0, 1), ylim=(0, 1))
    ax_rc.legend(fontsize=8)
    ax_rel.legend(fontsize=8)
    fig.savefig(path, dpi=100, format="png")
    return path


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _num(value, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def run_rows(name: str, metrics: dict) -> tuple[list[str], list[str]]:
    """Markdown rows of one run: the pool per method, and its splits' F1 / HasAns / NoAns / threshold."""
    pool, pool_rows = metrics.get("abstention") or {}, []
    for method in METHODS:
        m = pool.get(method)
        if not m:
            continue
        test = m.get("aurc_vs_raw")
        vs = f"{test['delta']:+.4f} [{test['ci_low']:+.4f}, {test['ci_high']:+.4f}], p {test['p_value']:.3g}" if test else "–"
        pool_rows.append(f"| {name} | {method} | {m['n']} | {_pct(m['f1'])} | {_num(m['ece'])} | {_num(m['macro_ce'])} | "
                         f"{_num(m['brier'])} | {_num(m['aurc'])} | {_pct(m['coverage_at_80'])} | "
                         f"{_pct(m['coverage_at_90'])} | {vs} |")
    split_rows = []
    for split, s in metrics.get("splits", {}).items():
        has, no = s.get("HasAns", {}), s.get("NoAns", {})
        tuned = f"{s['null_threshold']:.3f} ({s.get('null_threshold_tuned_on')})" if "null_threshold" in s else "–"
        ece = (s.get("abstention") or {}).get("temperature", (s.get("abstention") or {}).get("raw", {})).get("ece")
        split_rows.append(f"| {name} | {split} | {s['F1']:.2f} | {s['EM']:.2f} | {has.get('F1', '–')} | "
                          f"{no.get('F1', '–')} | {tuned} | {_num(ece)} |")
    return pool_rows, split_rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mrc abstention", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="run directories (each with metrics.json)")
    ap.add_argument("--out", required=True, help="directory for abstention.md and the plots")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pool_rows, split_rows, plots = [], [], []
    for run in map(Path, args.runs):
        metrics = _read(run / "metrics.json")
        name = run.name
        rows = run_rows(name, metrics)
        pool_rows += rows[0]
        split_rows += rows[1]
        splits = (metrics.get("abstention") or {}).get("splits", [])
        curves = {m: a for m in METHODS if splits and (a := pool_arrays(run, splits, m)) is not None}
        if curves:
            plots.append(plot_run(name, curves, out / f"abstention_{name}.png").name)
    lines = [f"`{' '.join(['python -m mrc abstention', *sys.argv[1:]] if argv is None else argv)}`", "",
             "## Mixed pool (confidence methods; calibrators fitted on the calibration slice of the training data)", "",
             "| run | method | n | F1 | ECE | MacroCE | Brier | AURC | coverage @ F1 80 % | @ 90 % | AURC − raw [95 % CI], p |",
             "|---|---|---|---|---|---|---|---|---|---|---|", *pool_rows, "",
             "## Splits", "", "| run | split | F1 | EM | HasAns F1 | NoAns F1 | null threshold (tuned on) | ECE (temperature) |",
             "|---|---|---|---|---|---|---|---|", *split_rows, ""]
    lines += [f"![{p}]({p})" for p in plots] or ["(no per-question confidence files: no plots)"]
    (out / "abstention.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out / 'abstention.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
