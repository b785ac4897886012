"""PNG plots for ``mrc.report`` (matplotlib ``Figure`` objects, Agg rendering, no pyplot state)."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mrc.report.jobs import Configs, Configuration, Keys, as_number, mapping, natural_key, robustness_drop, speed_stats, \
    split_stats

DPI = 100
STRIDE_KEY = "data.doc_stride"
PLOT_FILES = ("f1_vs_stride.png", "robustness_drop.png", "throughput.png")


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


# --------------------------------------------------------------------------- from configurations


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
    plot_f1_vs_stride(series, in_domain, path)
    return None


def _plot_robustness(configs: Configs, keys: Keys, splits: Keys, in_domain: str, path: Path) -> str | None:
    others = [s for s in splits if s != in_domain]
    if not others:
        return "no split besides the in-domain one"
    drops = {s: [robustness_drop(c, s, in_domain)[0] for c in configs] for s in others}
    if all(math.isnan(v) for values in drops.values() for v in values):
        return "no job has F1 on both the in-domain and another split"
    plot_robustness_drop([short_name(c, keys) for c in configs], drops, in_domain, path)
    return None


def _plot_throughput(configs: Configs, keys: Keys, in_domain: str, path: Path) -> str | None:
    speeds = [speed_stats(c, in_domain) for c in configs]
    train = [s["train_examples_per_s"] for s in speeds]
    evaluation = [s["eval_examples_per_s"] for s in speeds]
    if all(math.isnan(v) for v in train + evaluation):
        return "no job reports train or eval examples/s"
    plot_throughput([short_name(c, keys) for c in configs], train, evaluation, path)
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
