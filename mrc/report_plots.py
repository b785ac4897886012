"""PNG plots for ``mrc.report`` (matplotlib ``Figure`` objects, Agg rendering, no pyplot state)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

DPI = 100


def _figure(n_groups: int = 1) -> Figure:
    """A small figure that widens a little with the number of x groups."""
    return Figure(figsize=(max(5.0, min(12.0, 1.2 * n_groups + 2.5)), 3.6), layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _nan_to_zero(values: Sequence[float]) -> list[float]:
    return [0.0 if v is None or math.isnan(v) else float(v) for v in values]


def plot_f1_vs_stride(series: Mapping[str, Sequence[tuple[float, float, float]]], split: str,
                      path: Path) -> Path:
    """One line per series (head): ``(stride, mean F1, std F1)`` points with std error bars."""
    fig = _figure()
    ax = fig.add_subplot()
    for name, points in series.items():
        pts = sorted(points)
        xs = [p[0] for p in pts]
        ax.errorbar(xs, [p[1] for p in pts], yerr=_nan_to_zero([p[2] for p in pts]),
                    marker="o", capsize=3, label=name)
    ax.set_xlabel("data.doc_stride")
    ax.set_ylabel(f"{split} F1 (mean ± std over seeds)")
    ax.set_title("F1 vs doc_stride")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def _grouped_bars(ax, groups: Sequence[str], bars: Mapping[str, Sequence[float]]) -> None:
    """Bars of each key of ``bars`` side by side within each group."""
    x = np.arange(len(groups))
    width = 0.8 / max(1, len(bars))
    for i, (name, values) in enumerate(bars.items()):
        ax.bar(x + (i - (len(bars) - 1) / 2) * width, _nan_to_zero(values), width, label=name)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center",
                  fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")


def plot_robustness_drop(groups: Sequence[str], drops: Mapping[str, Sequence[float]], in_domain: str,
                         path: Path) -> Path:
    """Grouped bars: for each group (head), ``split F1 − in-domain F1`` for every split in ``drops``."""
    fig = _figure(len(groups))
    ax = fig.add_subplot()
    _grouped_bars(ax, groups, drops)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_ylabel(f"F1 − {in_domain} F1 (points)")
    ax.set_title("Robustness drop")
    return _save(fig, path)


def plot_throughput(groups: Sequence[str], train: Sequence[float], evaluation: Sequence[float],
                    path: Path) -> Path:
    """Grouped bars: train and eval examples/s for each group (head)."""
    fig = _figure(len(groups))
    ax = fig.add_subplot()
    _grouped_bars(ax, groups, {"train": train, "eval": evaluation})
    ax.set_ylabel("examples / s")
    ax.set_title("Throughput")
    return _save(fig, path)
