"""``python -m mrc explain CHECKPOINT_DIR --question Q --context C --out DIR`` (or ``--input FILE.json --id ID``):
the web page's pictures as PNGs (matplotlib, Agg backend), plus ``explain.json`` with the numbers.

- ``scores.png``: softmax head: p(start) and p(end) per context token of the answer's window, the answer's
  tokens shaded; GlobalPointer heads: the span heat-map (start token x end token, spans of at most
  ``max_answer_len`` tokens) of that window with the answer's cell marked;
- ``windows.png``: the windows the context was cut into (character ranges), the answer's marked.

Tokens are labelled with their text when a CJK-capable font is installed (``fc-list :lang=zh``), else by
index (and a log line says so); missing glyphs never stop the command.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

from mrc.errors import command_error
from mrc.serve.cli import QUANTIZE  # the --quantize choices, without importing torch

# torch and the model code are imported where they are used, so that --help answers at once

log = logging.getLogger("mrc.explain")


def cjk_font() -> str | None:
    """The family name of an installed font with Chinese glyphs that matplotlib can use, or None."""
    from matplotlib import font_manager

    files = []
    if shutil.which("fc-list"):
        try:
            out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=10).stdout
            files = [line.split(":")[0].strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            files = []
    for file in files:
        try:
            font_manager.fontManager.addfont(file)
            return font_manager.FontProperties(fname=file).get_name()
        except Exception:  # noqa: BLE001 - a font matplotlib cannot read (e.g. some .ttc): try the next
            continue
    return None


def _labels(tokens: list[dict], font: str | None) -> list[str]:
    return [t["text"] for t in tokens] if font else [str(i) for i in range(len(tokens))]


def _ticks(ax, axis: str, labels: list[str], font: str | None, limit: int = 60):
    n = len(labels)
    step = max(1, -(-n // limit))
    idx = list(range(0, n, step))
    kw = {"fontfamily": font} if font else {}
    if axis == "x":
        wide = max((len(labels[i]) for i in idx), default=0) > 2
        ax.set_xticks(idx, [labels[i] for i in idx], fontsize=7, rotation=90 if wide else 0, **kw)
    else:
        ax.set_yticks(idx, [labels[i] for i in idx], fontsize=7, **kw)


def explain(model, tokenizer, cfg, context: str, question: str, **kw) -> dict:
    """:func:`mrc.serve.answers.explain` (the numbers the pictures show)."""
    from mrc.serve.answers import explain as compute

    return compute(model, tokenizer, cfg, context, question, **kw)


def draw(data: dict, context: str, out: Path, *, font: str | None = "auto") -> list[Path]:
    """Write ``scores.png`` and ``windows.png`` for one :func:`mrc.serve.answers.explain` result."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if font == "auto":
        font = cjk_font()
    if font is None:
        log.info("no CJK-capable font found (fc-list :lang=zh): tokens are labelled by index")
    out.mkdir(parents=True, exist_ok=True)
    res, tokens = data["result"], data["tokens"]
    labels = _labels(tokens, font)
    n = len(tokens)
    ans = data["answer_tokens"]
    title = (f"answer {res['answer']!r}" if font else f"answer at characters {res['start']}-{res['end']}") \
        if res["answer"] else "no answer"
    title += f" · window {data['window']} · {data['head']}"
    files = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Glyph ... missing from font": drawn as boxes, never fatal
        if data["view"] == "tokens":
            fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.16 * n + 1.5), 4.6), sharex=True)
            for ax, key, name, color in ((axes[0], "start_scores", "p(start)", "#2e7d32"),
                                         (axes[1], "end_scores", "p(end)", "#e65100")):
                vals = np.array([np.exp(v) if v is not None else 0.0 for v in data[key]])
                if ans:
                    ax.axvspan(ans[0] - 0.5, ans[1] + 0.5, color="#fff3b0", zorder=0)
                ax.bar(np.arange(n), vals, color=color, width=0.8)
                ax.set_ylabel(name)
                ax.set_ylim(0, max(1e-6, vals.max()) * 1.1)
            _ticks(axes[1], "x", labels, font, limit=120)
            axes[1].set_xlabel("context token" + ("" if font else " (index)"))
            axes[0].set_title(title, fontsize=9, **({"fontfamily": font} if font else {}))
        else:
            A = data["max_answer_len"]
            grid = np.full((n, n), np.nan)
            for s, row in enumerate(data["band"]):
                for o, v in enumerate(row):
                    if v is not None and s + o < n:
                        grid[s, s + o] = v
            finite = grid[np.isfinite(grid)]
            hi = finite.max() if finite.size else 0.0
            lo = max(finite.min(), hi - 20) if finite.size else -1.0
            size = min(12.0, max(4.0, 0.12 * n + 2))
            fig, ax = plt.subplots(figsize=(size + 1.2, size))
            im = ax.imshow(grid, cmap="YlGnBu", vmin=lo, vmax=hi, interpolation="nearest")
            fig.colorbar(im, ax=ax, shrink=0.8, label="span score")
            if ans:
                ax.add_patch(Rectangle((ans[1] - 0.5, ans[0] - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
            _ticks(ax, "x", labels, font)
            _ticks(ax, "y", labels, font)
            ax.set_xlabel("end token")
            ax.set_ylabel("start token")
            ax.set_title(f"{title}\nspans of at most {A} tokens; red: the answer", fontsize=9,
                         **({"fontfamily": font} if font else {}))
        fig.tight_layout()
        files.append(out / "scores.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)

        wins = res["windows"]
        fig, ax = plt.subplots(figsize=(8, 0.45 * len(wins) + 1.2))
        for w in wins:
            color = "#2456c9" if w["index"] == data["window"] else "#9fb3e0"
            ax.barh(w["index"], w["end"] - w["start"], left=w["start"], color=color, height=0.6)
        if res["answer"]:
            ax.plot([res["start"], res["end"]], [res["window"]] * 2, color="red", linewidth=4, solid_capstyle="butt")
        ax.set_xlim(0, max(1, len(context)))
        ax.set_yticks([w["index"] for w in wins])
        ax.invert_yaxis()
        ax.set_xlabel("context character")
        ax.set_ylabel("window")
        ax.set_title("windows (dark: shown in scores.png; red: the answer)", fontsize=9)
        fig.tight_layout()
        files.append(out / "windows.png")
        fig.savefig(files[-1], dpi=110)
        plt.close(fig)
    (out / "explain.json").write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")
    return files


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(prog="python -m mrc explain", description="Write the span-score pictures "
                                 "(PNG) of one question: per-token start/end bars or the span heat-map, and "
                                 "the windows.")
    ap.add_argument("checkpoint", type=Path, help="directory written by a training run (<run dir>/checkpoint)")
    ap.add_argument("--question", help="the question (with --context)")
    ap.add_argument("--context", help="the passage (with --question)")
    ap.add_argument("--input", type=Path, help="a SQuAD-format file (with --id) instead of --question/--context")
    ap.add_argument("--id", help="the question id in --input")
    ap.add_argument("--out", type=Path, required=True, help="directory for scores.png, windows.png, explain.json")
    ap.add_argument("--window", type=int, default=None, help="which window to draw (default: the answer's)")
    ap.add_argument("--quantize", choices=QUANTIZE, help="explain the int8-quantised model, or the encoder run in bf16")
    ap.add_argument("--device", default="cpu", help="cpu (default), cuda, ...")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from mrc.data.squad import DataError, load_squad
    from mrc.eval.confidence import load_confidence
    from mrc.eval.predict import load_for_inference

    if (args.input is None) == (args.question is None and args.context is None):
        ap.error("give --question and --context, or --input and --id")
    if args.input is None and not (args.question and args.question.strip() and args.context and args.context.strip()):
        ap.error("--question and --context go together and must not be empty")
    if args.input is not None and not args.id:
        ap.error("--input needs --id (the question to explain)")
    from mrc.serve.out_paths import check_output_dir

    try:
        check_output_dir(args.out, "--out", "scores.png, windows.png and explain.json")  # before the model runs
        if args.input is not None:
            examples, _ = load_squad(args.input, training=False)
            found = [e for e in examples if e.id == args.id]
            if not found:
                raise DataError(f"{args.input}: no question with id {args.id!r}; give an id from the file")
            question, context = found[0].question, found[0].context
        else:
            question, context = args.question, args.context
        model, tokenizer, cfg = load_for_inference(args.checkpoint, args.device, quantize=args.quantize)
        confidence = load_confidence(args.checkpoint)  # the checkpoint's calibrators, as the server uses them
        data = explain(model, tokenizer, cfg, context, question, window=args.window, device=args.device,
                       confidence=confidence)
    except IndexError as e:
        print(f"error: --window: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - user mistakes get one line, anything else its traceback
        return command_error(e)
    files = draw(data, context, args.out)
    print(json.dumps({"answer": data["result"]["answer"], "files": [str(f) for f in files]}, ensure_ascii=False))
    return 0
