"""Stable subsets of a SQuAD file by a hash of the question id, for train/eval splits of one file.

    {source: dureader_robust/dev.json,
     builder: {_target_: mrc.data.subsets.hash_subset, _partial_: true, part: train, eval_share: 0.5, salt: cpu_small}}

A question belongs to the ``eval`` part when ``sha1(salt + id)`` falls in the first ``eval_share`` of
the hash range, else to ``train``: the assignment depends only on the id and the salt, never on the
file's order or size, so both parts of one file are disjoint and stable across machines and versions.
The same hash (salt ``calibration``) holds ``data.calibration_share`` of the training questions out as the
``calibration`` split (mrc.train.inputs).
"""
from __future__ import annotations

import copy
import hashlib

PARTS = ("train", "eval")


def in_eval_part(qid: str, eval_share: float, salt: str) -> bool:
    """Whether question ``qid`` falls in the eval part (a pure function of id, share and salt)."""
    digest = hashlib.sha1(f"{salt}:{qid}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < eval_share


def hash_subset(squad: dict, part: str, eval_share: float = 0.5, salt: str = "") -> tuple[dict, dict]:
    """The ``part`` ("train" or "eval") of ``squad``; returns (subset, counts). Paragraphs left without
    questions are dropped."""
    if part not in PARTS:
        raise ValueError(f"hash_subset: part must be one of {PARTS}, got {part!r}")
    if not 0.0 <= eval_share <= 1.0:
        raise ValueError(f"hash_subset: eval_share must be in [0, 1], got {eval_share}")
    subset, kept, total = select_questions(
        squad, lambda qid: in_eval_part(qid, eval_share, salt) == (part == "eval"))
    return subset, {"total": total, "kept": kept, "part": part, "eval_share": eval_share, "salt": salt}


def select_questions(squad: dict, keep) -> tuple[dict, int, int]:
    """The questions of ``squad`` whose id passes ``keep(id)``; returns (subset, kept, total). Paragraphs left
    without questions are dropped; every other field is kept."""
    out = {k: v for k, v in squad.items() if k != "data"}
    out["data"], kept, total = [], 0, 0
    for article in squad.get("data", []):
        paragraphs = []
        for para in article.get("paragraphs", []):
            qas = [qa for qa in para.get("qas", []) if keep(str(qa.get("id")))]
            total += len(para.get("qas", []))
            if qas:
                paragraphs.append({**copy.deepcopy({k: v for k, v in para.items() if k != "qas"}), "qas": qas})
                kept += len(qas)
        if paragraphs:
            out["data"].append({**{k: v for k, v in article.items() if k != "paragraphs"}, "paragraphs": paragraphs})
    return out, kept, total
