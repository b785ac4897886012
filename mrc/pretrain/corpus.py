"""Pretraining text: corpus files, removal of evaluation text, a held-out slice, tokenization and packing.

Lines that overlap the evaluation files are dropped first (:mod:`mrc.pretrain.eval_text`: the rules).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from omegaconf import DictConfig

from mrc.pretrain.eval_text import EvalTextFilter, drop_eval_text
from mrc.pretrain.masking import ChineseWordSegmenter, mask_tokens
from mrc.pretrain.squad import mrc_files, squad_contexts

log = logging.getLogger(__name__)


def corpus_files(paths: Sequence[str | Path]) -> list[Path]:
    """The corpus files named by ``paths``: files as given, directories searched recursively for ``*.txt``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("*.txt")))
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"corpus path {p}: no such file or directory")
    if not files:
        raise ValueError(f"no corpus text under {list(map(str, paths))}")
    return files


def read_lines(files: Iterable[Path], max_lines: int | None = None) -> list[str]:
    """Non-empty stripped lines of ``files`` in order (at most ``max_lines``)."""
    lines: list[str] = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if max_lines is not None and len(lines) >= max_lines:
                    return lines
                line = line.strip()
                if line:
                    lines.append(line)
    return lines


def split_heldout(lines: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """(training lines, ``n`` held-out lines drawn at random, each list in corpus order)."""
    n = min(n, len(lines) // 2)
    pick = set(np.random.default_rng(seed).choice(len(lines), size=n, replace=False).tolist()) if n else set()
    return ([s for i, s in enumerate(lines) if i not in pick], [s for i, s in enumerate(lines) if i in pick])


def tokenize_lines(lines: list[str], tokenizer, segmenter=None, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """All lines' WordPiece ids concatenated (no special tokens) and a parallel ``word_start`` flag array.

    Without a segmenter every token starts a word. With one (whole-word masking), a token starts a word
    when it starts a new segmenter word (read from the fast tokenizer's character offsets); the first
    token of every line always starts one.
    """
    ids: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    for lo in range(0, len(lines), chunk):
        batch = lines[lo:lo + chunk]
        enc = tokenizer(batch, add_special_tokens=False, return_offsets_mapping=segmenter is not None,
                        verbose=False)  # long lines are fine: they are packed, not fed whole
        for j, toks in enumerate(enc["input_ids"]):
            ids.append(np.asarray(toks, dtype=np.int32))
            if segmenter is None:
                starts.append(np.ones(len(toks), dtype=bool))
            else:
                starts.append(_word_starts(batch[j], enc["offset_mapping"][j], segmenter))
    if not ids:
        return np.zeros(0, np.int32), np.zeros(0, bool)
    return np.concatenate(ids), np.concatenate(starts)


def _word_starts(line: str, offsets: list[tuple[int, int]], segmenter) -> np.ndarray:
    word_of_char = np.zeros(len(line) + 1, dtype=np.int64)
    for w, (s, e) in enumerate(segmenter.spans(line)):
        word_of_char[s:e] = w
    words = np.array([word_of_char[min(s, len(line))] for s, _ in offsets], dtype=np.int64)
    flags = np.ones(len(words), dtype=bool)
    flags[1:] = words[1:] != words[:-1]
    return flags


class PackedCorpus:
    """Token ids packed across lines into sequences of ``max_len`` (with [CLS] and [SEP]).

    Sequence k holds content tokens ``[k * L, (k + 1) * L)`` of the concatenated corpus, L = max_len - 2,
    so every token is in exactly one sequence, in order; only the last sequence may be shorter.
    """

    def __init__(self, ids: np.ndarray, word_start: np.ndarray, max_len: int, cls_id: int, sep_id: int,
                 pad_id: int, special_ids: Iterable[int]):
        if max_len < 3:
            raise ValueError("max_len must be at least 3 ([CLS] token [SEP])")
        self.ids, self.word_start, self.span = ids, word_start, max_len - 2
        self.max_len, self.cls_id, self.sep_id, self.pad_id = max_len, cls_id, sep_id, pad_id
        self.special = np.array(sorted(set(special_ids)), dtype=np.int32)

    def __len__(self) -> int:
        return -(-len(self.ids) // self.span)

    @property
    def n_tokens(self) -> int:
        """Content tokens (without [CLS]/[SEP])."""
        return len(self.ids)

    def sequence(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids with [CLS]/[SEP], word index per token with -1 where never masked) of sequence ``k``."""
        lo = k * self.span
        content = self.ids[lo:lo + self.span]
        starts = self.word_start[lo:lo + self.span].copy()
        starts[0] = True  # a word cut by the sequence boundary starts again here
        words = np.cumsum(starts) - 1
        words[np.isin(content, self.special)] = -1
        ids = np.concatenate([[self.cls_id], content, [self.sep_id]]).astype(np.int64)
        return ids, np.concatenate([[-1], words, [-1]]).astype(np.int64)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded tensors (input_ids, attention_mask, word_ids), each (B, T) with T the longest row."""
        rows = [self.sequence(k) for k in indices]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        word_ids = torch.full((len(rows), width), -1, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, words) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.from_numpy(ids)
            word_ids[i, :len(ids)] = torch.from_numpy(words)
            attention[i, :len(ids)] = 1
        return input_ids, attention, word_ids


def draw_indices(n_sequences: int, batch_size: int, draw: int, seed: int) -> list[int]:
    """Sequences of batch draw ``draw``: an endless stream of per-epoch shuffles (pure in seed, draw)."""
    out = []
    for k in range(draw * batch_size, (draw + 1) * batch_size):
        epoch, pos = divmod(k, n_sequences)
        out.append(int(_epoch_order(n_sequences, seed, epoch)[pos]))
    return out


_ORDER_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _ORDER_CACHE:
        _ORDER_CACHE.clear()  # one epoch at a time (two at an epoch boundary, recomputed cheaply)
        _ORDER_CACHE[key] = np.random.default_rng([seed, epoch]).permutation(n)
    return _ORDER_CACHE[key]


@dataclass
class Corpora:
    """Packed training and held-out sequences and what happened to the corpus."""

    train: PackedCorpus
    heldout: PackedCorpus
    info: dict


def prepare_corpora(cfg: DictConfig, tokenizer, out_dir: Path, cache: Path | None = None) -> Corpora:
    """Read, filter (writing ``eval_overlap.json``), split, tokenize and pack the corpus.

    With ``cache``, the tokenized arrays are stored there and reused by a rerun with the same data
    settings, seed, masking mode and tokenizer (a resumed run then skips segmenting the corpus again).
    """
    d, key = cfg.data, _fingerprint(cfg, tokenizer)
    ids = [d.max_len, tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
           tokenizer.all_special_ids]
    if cache is not None and (arrays := _load_cache(cache, key)) is not None:
        info = json.loads(str(arrays["info"]))
        log.info("corpus: reusing %s (%d training tokens)", cache, info["train_tokens"])
        return Corpora(PackedCorpus(arrays["train_ids"], arrays["train_starts"], *ids),
                       PackedCorpus(arrays["held_ids"], arrays["held_starts"], *ids), info)
    files = corpus_files(list(d.corpus))
    lines = read_lines(files, d.max_lines)
    exclude, n_contexts = [Path(p) for p in d.exclude_squad], 0
    if d.get("mrc_data"):
        train_files, eval_files = mrc_files(d.mrc_data, out_dir)
        exclude += eval_files
        if d.get("train_contexts"):
            contexts = squad_contexts(train_files)
            lines, n_contexts = lines + contexts, len(contexts)
            log.info("corpus: + %d training contexts of data %s", n_contexts, d.mrc_data)
    filt = (EvalTextFilter.from_squad(exclude, ngram=d.overlap_ngram, min_chars=d.overlap_min_chars)
            if exclude else None)
    lines, overlap = drop_eval_text(lines, filt)
    overlap.update(exclude_squad=[str(p) for p in exclude], mrc_data=d.get("mrc_data"),
                   train_contexts_added=n_contexts, ngram=d.overlap_ngram, min_chars=d.overlap_min_chars)
    (out_dir / "eval_overlap.json").write_text(json.dumps(overlap, indent=2, ensure_ascii=False))
    train_lines, held_lines = split_heldout(lines, int(d.heldout_lines), cfg.seed)
    segmenter = ChineseWordSegmenter() if cfg.masking.whole_word else None
    (train_ids, train_starts), (held_ids, held_starts) = (tokenize_lines(part, tokenizer, segmenter)
                                                          for part in (train_lines, held_lines))
    train, heldout = PackedCorpus(train_ids, train_starts, *ids), PackedCorpus(held_ids, held_starts, *ids)
    if len(train) == 0:
        raise ValueError("no training text left after filtering")
    info = {"files": [str(f) for f in files], "eval_overlap": overlap, "train_lines": len(train_lines),
            "train_tokens": train.n_tokens, "train_sequences": len(train), "heldout_lines": len(held_lines),
            "heldout_tokens": heldout.n_tokens, "heldout_sequences": len(heldout)}
    log.info("corpus: %s", info)
    if cache is not None:
        _save_cache(cache, key=key, info=json.dumps(info, ensure_ascii=False), train_ids=train_ids,
                    train_starts=train_starts, held_ids=held_ids, held_starts=held_starts)
    return Corpora(train, heldout, info)


def _fingerprint(cfg: DictConfig, tokenizer) -> str:
    from omegaconf import OmegaConf

    spec = {"data": OmegaConf.to_container(cfg.data, resolve=True), "seed": cfg.seed,
            "whole_word": bool(cfg.masking.whole_word), "tokenizer": tokenizer.backend_tokenizer.to_str()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _load_cache(path: Path, key: str):
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    return arrays if str(arrays.get("key")) == key else None


def _save_cache(path: Path, **arrays) -> None:
    # Atomic like the resumable state: a kill mid-write leaves no half-written cache behind.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in arrays.items()})
    os.replace(tmp, path)


def masked_batch(packed: PackedCorpus, indices: list[int], tokenizer, replacements, m: DictConfig,
                 generator: torch.Generator):
    """(masked input ids, attention mask, labels) for ``indices`` of ``packed``."""
    ids, attention, words = packed.batch(indices)
    masked, labels = mask_tokens(ids, words, mask_id=tokenizer.mask_token_id, replacements=replacements,
                                 generator=generator, mask_prob=m.mask_prob, mask_share=m.mask_share,
                                 random_share=m.random_share)
    return masked, attention, labels
