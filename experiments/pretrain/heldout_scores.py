"""Held-out masked-LM scores of a run's saved state (``<run dir>/resume/pretrain_state.pt``), with the same
held-out sequences and masks as ``python -m mrc.pretrain`` itself: for runs whose summary predates a score, or
for a state in the middle of a run.

    python experiments/pretrain/heldout_scores.py outputs/tiny_zh recipe=tiny_zh

Prints one JSON line: the state's optimizer step, ``acc`` / ``mask_acc`` / ``mask_loss``
(:func:`mrc.pretrain.heldout.heldout_accuracy`), the most-frequent-token baseline (:func:`mrc.pretrain.heldout.unigram_baseline`),
``mask_top``: the three tokens predicted most often at [MASK] with their shares, and ``copy_acc``: how often an
unselected token is predicted as itself (the identity the kept tenth of the selected tokens teaches).
The overrides must be those of the run (they rebuild its held-out split; the tokenized corpus is read from
``resume/corpus.npz``).
"""
from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from mrc.pretrain.masking import IGNORE_INDEX, replacement_ids
from mrc.pretrain.train import CONF_DIR, CORPUS_CACHE, STATE
from mrc.pretrain.heldout import heldout_accuracy, heldout_batches, unigram_baseline
from mrc.pretrain.model import build_model, mlm_head, set_attention_dropout
from mrc.pretrain.corpus import prepare_corpora


@torch.no_grad()
def predictions(model, corpora, tokenizer, replacements, cfg) -> dict:
    """``mask_top`` and ``copy_acc`` over the held-out batches (see the module docstring)."""
    model.eval()
    top, copied, unselected = Counter(), 0, 0
    for ids, att, labels in heldout_batches(corpora, tokenizer, replacements, cfg):
        guess = mlm_head(model)(model.base_model(input_ids=ids, attention_mask=att).last_hidden_state).argmax(-1)
        top.update(guess[(labels != IGNORE_INDEX) & (ids == tokenizer.mask_token_id)].tolist())
        plain = (labels == IGNORE_INDEX) & att.bool() & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))
        copied, unselected = copied + int((guess[plain] == ids[plain]).sum()), unselected + int(plain.sum())
    n = sum(top.values())
    return {"mask_top": [[tokenizer.convert_ids_to_tokens(t), round(c / max(n, 1), 4)] for t, c in top.most_common(3)],
            "copy_acc": copied / max(unselected, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="the run's Hydra overrides, e.g. recipe=tiny_zh")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    run = args.run_dir.resolve()
    state_path = run / STATE
    if not state_path.is_file():
        raise SystemExit(f"{state_path}: no saved state (deleted after the run?)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*args.overrides, f"paths.output_dir={run}", "logger=none"])
    model, tokenizer = build_model(cfg.model)
    state = torch.load(state_path, weights_only=False, map_location="cpu")
    model.load_state_dict(state["model"])
    if cfg.model.get("attention_dropout") is not None:
        set_attention_dropout(model, cfg.model.attention_dropout)
    corpora = prepare_corpora(cfg, tokenizer, run, cache=run / CORPUS_CACHE)
    replacements = replacement_ids(tokenizer.get_vocab(), tokenizer.all_special_ids)
    scores = heldout_accuracy(model, corpora, tokenizer, replacements, cfg, torch.device("cpu"))
    print(json.dumps({"step": json.loads(state["progress"])["step"], **(scores or {}),
                      "unigram": unigram_baseline(corpora, tokenizer, replacements, cfg),
                      **predictions(model, corpora, tokenizer, replacements, cfg)}, ensure_ascii=False))


if __name__ == "__main__":
    main()
