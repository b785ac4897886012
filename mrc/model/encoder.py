"""Encoder factories (Hydra ``_target_``s): a hub/path checkpoint, or a tiny BERT built offline.

Every factory returns an :class:`Encoder` (model + fast tokenizer) and accepts ``texts`` (the training
texts) so factories that build a vocabulary can use them; the others ignore it.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel
from transformers import BertTokenizerFast

from mrc.model.hub import HubError, hub_or_cache

log = logging.getLogger(__name__)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Han ideographs (with extensions and compatibility blocks), CJK symbols and punctuation, full-width forms.
CJK_CLASS = ("[\u2e80-\u2fdf\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f"
             "\uff00-\uffef\U00020000-\U0002fa1f]")


@dataclass
class Encoder:
    """A transformer body without pooler and the fast tokenizer that goes with it."""

    model: PreTrainedModel
    tokenizer: object

    @property
    def hidden_size(self) -> int:
        """Width of the encoder's last hidden states."""
        return self.model.config.hidden_size


def _drop_pooler(model: PreTrainedModel) -> PreTrainedModel:
    # MRC heads read token states only; the pooler is dead weight and gets no gradient.
    if getattr(model, "pooler", None) is not None:
        model.pooler = None
    return model


def generic_fast(tokenizer):
    """The same ``tokenizers`` pipeline as a generic fast tokenizer: saved and reloaded verbatim from
    ``tokenizer.json`` (a model-specific class may rebuild its pre-tokenizer on load)."""
    from transformers import PreTrainedTokenizerFast

    specials = {k: getattr(tokenizer, k) for k in ("bos_token", "eos_token", "cls_token", "sep_token", "pad_token",
                                                  "unk_token", "mask_token") if getattr(tokenizer, k, None)}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer,
                                   model_max_length=tokenizer.model_max_length, **specials)


def split_cjk_words(tokenizer):
    """A copy of ``tokenizer`` that makes every CJK character a word of its own before its model runs
    (kept when saved). For SentencePiece vocabularies (XLM-R, e5), whose pieces often span several
    Chinese characters, this puts every Chinese answer boundary on a token boundary; BERT's WordPiece
    already splits them."""
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    backend = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
    split = pre_tokenizers.Split(Regex(CJK_CLASS), "isolated")
    backend.pre_tokenizer = pre_tokenizers.Sequence([backend.pre_tokenizer, split]) if backend.pre_tokenizer else split
    out = generic_fast(tokenizer)
    out._tokenizer = backend
    return out


def pretrained(name_or_path: str, texts=None, revision: str | None = None, cache_dir: str | None = None,
               local_files_only: bool = False, split_cjk: bool = False,
               freeze_word_embeddings: bool = False, keep_layers: int | None = None) -> Encoder:
    """Load an encoder and its tokenizer by hub name (e.g. ``hfl/chinese-roberta-wwm-ext``) or local dir.

    ``split_cjk``: see :func:`split_cjk_words`. ``freeze_word_embeddings``: the word-embedding table gets no
    gradient (and so no optimizer state): for large multilingual vocabularies (e5: 250K x 384) the table,
    its gradient and AdamW's two moments are most of a CPU run's memory. ``keep_layers``: keep only the first
    N transformer layers (a smaller student for distillation, e.g. e5_small cut to 4 of its 12 layers)."""
    kw = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
    kw = hub_or_cache(name_or_path, kw)  # offline: the cache only, failing at once instead of retrying
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, **kw)
        model = _load_sdpa(name_or_path, **kw)
    except OSError as e:
        raise HubError(f"could not load encoder {name_or_path!r}: {e}\nOffline? Use encoder=tiny, or set "
                      "encoder.name_or_path to a local directory saved with save_pretrained.") from None
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"{name_or_path}: a fast tokenizer (tokenizer.json or vocab.txt) is required "
                        "for offset mapping")
    if split_cjk:
        tokenizer = split_cjk_words(tokenizer)
    if freeze_word_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if keep_layers is not None:
        truncate_layers(model, keep_layers, name_or_path)
    return Encoder(_drop_pooler(model), tokenizer)


@contextlib.contextmanager
def loading_bar_on_a_terminal_only():
    """transformers draws a "Loading weights" bar for every ``from_pretrained``, also into a log file or a pipe,
    where it is noise before a command's one ``error:`` line; off a terminal it is switched off meanwhile."""
    from transformers.utils import logging as hf_logging

    hide = hf_logging.is_progress_bar_enabled() and not sys.stderr.isatty()
    if hide:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            hf_logging.enable_progress_bar()


def _load_sdpa(name_or_path, **kw) -> PreTrainedModel:
    """``AutoModel.from_pretrained`` without a pooler (MRC heads read token states only), asking for PyTorch's
    fused scaled-dot-product attention (flash / memory-efficient kernels on CUDA); an architecture without
    an SDPA implementation loads with its default attention instead."""
    for extra in ({"attn_implementation": "sdpa"}, {}):
        try:
            try:
                with loading_bar_on_a_terminal_only():
                    return AutoModel.from_pretrained(name_or_path, add_pooling_layer=False, **extra, **kw)
            except TypeError:  # a model class without a pooler option
                with loading_bar_on_a_terminal_only():
                    return AutoModel.from_pretrained(name_or_path, **extra, **kw)
        except (ValueError, ImportError) as e:  # transformers: "does not support ... scaled_dot_product_attention"
            if not extra or "sdpa" not in str(e).lower() and "scaled_dot_product" not in str(e).lower():
                raise
            log.info("%s: no SDPA attention (%s); loading its default attention", name_or_path, str(e)[:200])
    raise AssertionError("unreachable")


def attention_implementation(model) -> str:
    """The attention implementation ``model`` runs (``sdpa``, ``eager``, ``flash_attention_2``, ...)."""
    return str(getattr(model.config, "_attn_implementation", None) or "eager")


def truncate_layers(model, n: int, name: str = "encoder") -> None:
    """Keep the first ``n`` transformer layers of a BERT-style ``model`` (``model.encoder.layer``) and
    record the new depth in its config, so that a saved checkpoint reloads with ``n`` layers."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise TypeError(f"encoder.keep_layers: {name} ({type(model).__name__}) has no encoder.layer list to cut")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(layers):
        raise ValueError(f"encoder.keep_layers={n!r}: {name} has {len(layers)} layers; give 1..{len(layers)} or null")
    model.encoder.layer = torch.nn.ModuleList(list(layers)[:n])
    model.config.num_hidden_layers = n


def local_build(name_or_path: str, build: str, texts=None, local_files_only: bool = True, **kw) -> Encoder:
    """:func:`pretrained` for an encoder built on this machine (``encoder=tiny_zh``, ``encoder=minilm_zh``):
    a missing directory fails with ``build``, the command that makes it (``pretrained`` alone would
    report a missing local path as a malformed hub repo id)."""
    path = Path(name_or_path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"encoder {path}: not built yet (no config.json). Build it with\n  {build}\n"
                                "or point encoder.name_or_path (or its environment variable) at the built dir.")
    return pretrained(str(path), texts=texts, local_files_only=local_files_only, **kw)


def build_vocab(texts, vocab_size: int, lowercase: bool = True) -> list[str]:
    """A deterministic WordPiece vocabulary for ``texts``: every character seen (CJK characters are
    words of their own under BERT pre-tokenization; other characters also as ``##`` continuations),
    then the most frequent whole words, ties broken alphabetically, up to ``vocab_size``."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(lowercase=lowercase, handle_chinese_chars=True, strip_accents=lowercase)
    pre = pre_tokenizers.BertPreTokenizer()
    words: Counter = Counter()
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text)))
    chars = sorted({c for w in words for c in w})
    vocab = SPECIAL_TOKENS + chars + sorted({f"##{c}" for w in words if len(w) > 1 for c in w[1:]})
    room = max(vocab_size - len(vocab), 0)
    multi = sorted((w for w in words if len(w) > 1), key=lambda w: (-words[w], w))[:room]
    return vocab + sorted(multi)


def _wordpiece_tokenizer(vocab_file, lowercase: bool):
    # Positional: the first parameter is ``vocab_file`` in transformers 4 and ``vocab`` in 5.
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=lowercase)
    if tokenizer.unk_token_id is None or len(tokenizer) <= len(SPECIAL_TOKENS):
        raise ValueError(f"{vocab_file}: vocabulary did not load ({len(tokenizer)} tokens)")
    return tokenizer


def tiny_bert(texts=None, vocab_file: str | None = None, vocab_size: int = 8000, layers: int = 2,
              hidden_size: int = 128, heads: int = 2, intermediate_size: int = 512,
              max_position: int = 512, dropout: float = 0.1, lowercase: bool = True,
              position_init: str = "sinusoidal", seed: int = 0) -> Encoder:
    """A small randomly initialised BERT with an offline tokenizer.

    The vocabulary comes from ``vocab_file`` (e.g. the bert-base-chinese ``vocab.txt``) when given,
    else it is trained on ``texts`` (the run's training questions and contexts).
    ``position_init="sinusoidal"`` starts the (trainable) position table from sine/cosine waves, which
    gives attention relative-offset structure from step 0; ``"random"`` keeps BERT's N(0, 0.02) init.
    """
    if position_init not in ("sinusoidal", "random"):
        raise ValueError(f"position_init must be 'sinusoidal' or 'random', got {position_init!r}")
    if vocab_file:
        if not Path(vocab_file).is_file():
            raise FileNotFoundError(f"encoder.vocab_file={vocab_file}: file not found")
        tokenizer = _wordpiece_tokenizer(vocab_file, lowercase)
    else:
        if not texts:
            raise ValueError("encoder=tiny without vocab_file needs training texts to build a vocabulary")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "vocab.txt"
            path.write_text("\n".join(build_vocab(texts, vocab_size, lowercase)) + "\n", encoding="utf-8")
            tokenizer = _wordpiece_tokenizer(path, lowercase)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate_size,
                        max_position_embeddings=max_position, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, pad_token_id=tokenizer.pad_token_id,
                        attn_implementation="sdpa")  # PyTorch's fused attention (flash kernels on CUDA)
    import torch

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BertModel(config, add_pooling_layer=False)
    if position_init == "sinusoidal":
        table = model.embeddings.position_embeddings.weight
        with torch.no_grad():
            table.copy_(sinusoidal_positions(max_position, hidden_size) * table.std() / 0.7071)
    log.info("tiny BERT: %d layers x %d hidden, vocab %d, %.2fM parameters", layers, hidden_size,
             len(tokenizer), sum(p.numel() for p in model.parameters()) / 1e6)
    return Encoder(model, tokenizer)


def sinusoidal_positions(n: int, dim: int):
    """(n, dim) table: sin on even, cos on odd columns, wavelengths 2*pi .. 10000*2*pi (Vaswani et al.)."""
    import torch

    pos = torch.arange(n, dtype=torch.float32)[:, None]
    inv = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    table = torch.zeros(n, dim)
    table[:, 0::2], table[:, 1::2] = (pos * inv).sin(), (pos * inv).cos()[:, : dim // 2]
    return table


def from_checkpoint(path: str | Path) -> Encoder:
    """Encoder and tokenizer saved by :func:`mrc.model.checkpoint.save` (no network)."""
    path = Path(path)
    model = _load_sdpa(path / "encoder", local_files_only=True)  # saved without a pooler: don't build one
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer", local_files_only=True, use_fast=True)
    return Encoder(_drop_pooler(model), tokenizer)
